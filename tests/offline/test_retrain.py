"""Gated retraining: labels from the log, the held-out split, promotion and refusal."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings
from tierroute.model.classifier import RouterModel
from tierroute.model.registry import ModelRegistry, bundle_version
from tierroute.offline.cli.operations import add_retrain_parser
from tierroute.offline.retrain import (
    NO_TIER,
    LoggedExample,
    LogLabels,
    Margins,
    RetrainOptions,
    evaluate_bundles,
    feedback_verdicts,
    gate,
    in_holdout,
    label_from_log,
    labels_from_store,
    retrain,
    split_records,
    write_training_file,
)
from tierroute.outcomes import iter_records
from tierroute.querylog import FeedbackRecord, hash_query, open_store
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.records import HopRecord

TIERS = ("cheap", "mid", "expensive")
T0 = datetime(2025, 3, 1, tzinfo=UTC)
RECORDS = make_records(300)


def hop(tier: str, role: str, verdict: str = "", outcome: str = "ok") -> HopRecord:
    """One logged hop."""
    return {
        "tier": tier,
        "model": f"{tier}-model",
        "role": role,
        "outcome": outcome,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.0,
        "latency_ms": 1.0,
        "verdict": verdict,
        "issues": [],
        "attempt": 1,
        "speculative": False,
        "error_kind": "",
    }


CHEAP_PASSED = [hop("cheap", "answer"), hop("mid", "judge", "pass")]
CHEAP_FAILED_MID_PASSED = [*CHEAP_PASSED[:1], hop("mid", "judge", "fail"), hop("mid", "answer"),
                           hop("expensive", "judge", "pass")]  # fmt: skip
BOTH_FAILED = [*CHEAP_FAILED_MID_PASSED[:3], hop("expensive", "judge", "fail"),
               hop("expensive", "answer")]  # fmt: skip


@pytest.mark.parametrize(
    ("hops", "final", "user", "label"),
    [
        (CHEAP_PASSED, "cheap", None, 0),
        (CHEAP_FAILED_MID_PASSED, "mid", None, 1),
        (BOTH_FAILED, "expensive", False, NO_TIER),
        (BOTH_FAILED, "expensive", None, None),
        ([hop("mid", "answer")], "mid", True, 1),
        (CHEAP_PASSED, "cheap", False, None),
        ([hop("cheap", "answer"), hop("mid", "judge", "unavailable")], "cheap", None, None),
        (
            [hop("cheap", "HOP_ROLE_ANSWER"), hop("mid", "HOP_ROLE_JUDGE", "JUDGE_VERDICT_PASS")],
            "cheap",
            None,
            0,
        ),
        (
            [hop("cheap", "answer"), hop("mid", "judge", "pass", outcome="cancelled")],
            "cheap",
            None,
            None,
        ),
    ],
)
def test_labels_follow_judge_verdicts_and_feedback(
    hops: list[HopRecord], final: str, user: bool | None, label: int | None
) -> None:
    """The label is the cheapest tier known to suffice; feedback beats the judge."""
    record = sample_record("r", hops=hops, final_tier=final)
    assert label_from_log(record, user, TIERS) == label


def test_latest_feedback_decides_and_ratings_map_to_verdicts() -> None:
    """A flag beats a rating; 4-5 is right, 1-2 wrong, 3 no evidence; the latest one wins."""
    feedback = [
        FeedbackRecord("a", ts=T0, rating=1),
        FeedbackRecord("a", ts=T0 + timedelta(hours=1), rating=5),
        FeedbackRecord("b", ts=T0, rating=2),
        FeedbackRecord("c", ts=T0, rating=3),
        FeedbackRecord("d", ts=T0, rating=5),
        FeedbackRecord("d", ts=T0 + timedelta(hours=1), correct=False),
    ]
    assert feedback_verdicts(feedback) == {"a": True, "b": False, "d": False}


async def test_labels_from_the_log_need_stored_text_and_evidence(tmp_path: Path) -> None:
    """Of 5 calls: 2 labelled (one question twice), 1 without text, 1 without evidence."""
    texts = ["question one", "question two"]
    records = [
        sample_record("a", ts=T0, query_text=texts[0], query_sha256=hash_query(texts[0]),
                      hops=CHEAP_PASSED),
        sample_record("b", ts=T0 + timedelta(1), query_text=texts[0],
                      query_sha256=hash_query(texts[0]), hops=CHEAP_FAILED_MID_PASSED,
                      final_tier="mid"),
        sample_record("c", ts=T0, query_text=texts[1], query_sha256=hash_query(texts[1]),
                      hops=[hop("mid", "answer")], final_tier="mid"),
        sample_record("d", ts=T0, query_text=None, hops=CHEAP_PASSED),
        sample_record("e", ts=T0, query_text="no evidence", hops=[hop("cheap", "answer")]),
    ]  # fmt: skip
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    store = open_store(url)
    await store.migrate()
    await store.write_batch(records, [FeedbackRecord("c", ts=T0, correct=True)])
    labels = await labels_from_store(store, TIERS)
    await store.aclose()
    assert sorted((e.text, e.label) for e in labels.examples) == [
        ("question one", 1),
        ("question two", 1),
    ]
    assert (labels.calls, labels.without_text, labels.without_evidence) == (5, 1, 1)
    assert labels.duplicates == 1


def test_the_held_out_split_is_stable_and_keeps_duplicates_together() -> None:
    """The same groups are held out every run, and a duplicate group never straddles."""
    records = [dict(r, dup_group=f"g{i // 2}") for i, r in enumerate(RECORDS)]
    train, held = split_records(records, 0.2)
    again = split_records(list(reversed(records)), 0.2)[1]
    assert {r["id"] for r in held} == {r["id"] for r in again}
    held_groups = {r["dup_group"] for r in held}
    assert not held_groups & {r["dup_group"] for r in train}
    assert 40 <= len(held) <= 80
    assert in_holdout("g0", 0.2) == in_holdout("g0", 0.2)


def test_logged_examples_are_written_in_the_training_schema(tmp_path: Path) -> None:
    """A logged example becomes a record whose correctness follows its label."""
    path = tmp_path / "train.jsonl.gz"
    written = write_training_file(
        path, RECORDS[:10], [LoggedExample("r1", "a logged question", 1)], n_tiers=3
    )
    assert written == 1
    *_, row = iter_records(path)
    assert row["prompt"] == "a logged question"
    assert row["min_tier_correct"] == "mid"
    assert [row["models"][row["tiers"][k]]["correct"] for k in TIERS] == [0, 1, 1]


# -- training, evaluation and the gate -------------------------------------------------------


@dataclass(frozen=True)
class Bundles:
    """The clean data, a data copy with shuffled labels, and a model trained on each."""

    data: Path
    shuffled_data: Path
    good: Path
    shuffled: Path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Train the good and the shuffled-label model once for the module (3 folds each)."""
    from tierroute.offline.training.calibrate import Target
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("retrain")
    data = write_dataset(root / "small.jsonl.gz", RECORDS)
    labels = [r["min_tier_correct"] for r in RECORDS]
    random.Random(1).shuffle(labels)
    # Labels shuffled, recorded correctness intact: an honestly worse model, scored fairly.
    shuffled = [dict(r, min_tier_correct=label) for r, label in zip(RECORDS, labels, strict=True)]
    shuffled_data = write_dataset(root / "shuffled.jsonl.gz", shuffled)
    options = TrainOptions(
        folds=3,
        target=Target("max_cost_ratio", 0.7),
        compare_none_labels=False,
        progress=False,
    )
    train_bundle(data, root / "good", options)
    train_bundle(shuffled_data, root / "shuffled", options)
    return Bundles(data, shuffled_data, root / "good", root / "shuffled")


def held_out_ids(data: Path) -> set[str]:
    """The ids of the default held-out split."""
    return {str(r["id"]) for r in split_records(list(iter_records(data)), 0.2)[1]}


def test_the_gate_refuses_a_candidate_trained_on_shuffled_labels(bundles: Bundles) -> None:
    """Against the good model on the held-out split, the shuffled-label one is refused."""
    figures = evaluate_bundles(
        make_settings(),
        bundles.data,
        held_out_ids(bundles.data),
        {"candidate": bundles.shuffled, "current": bundles.good},
    )
    decision = gate(figures["candidate"], figures["current"], Margins())
    assert figures["candidate"].quality < figures["current"].quality
    assert not decision.quality_ok
    assert not decision.promote


def test_the_gate_allows_the_margins_and_nothing_beyond() -> None:
    """Quality may drop by the quality margin and cost rise by the cost margin, no more."""
    from tierroute.offline.retrain import Figures

    current = Figures("cur", 0.80, 0.001000, {}, {})
    within = Figures("new", 0.79, 0.001050, {}, {})
    beyond = Figures("new", 0.789, 0.001051, {}, {})
    assert gate(within, current, Margins(quality=0.01, cost=0.05)).promote
    decision = gate(beyond, current, Margins(quality=0.01, cost=0.05))
    assert (decision.quality_ok, decision.cost_ok) == (False, False)


ONE_LOGGED = LogLabels(
    (LoggedExample("log-1", "explain the quantum of the eigenvalue in a new case?", 2),),
    calls=1,
    without_text=0,
    without_evidence=0,
    duplicates=0,
)


def test_a_served_model_trained_on_the_held_out_rows_is_compared_by_its_refit(
    bundles: Bundles, tmp_path: Path
) -> None:
    """The good model saw every row of the data: the gate uses its recipe refitted."""
    registry = ModelRegistry(tmp_path / "models", seed=bundles.good)
    result = retrain(make_settings(), ONE_LOGGED, bundles.data, registry, RetrainOptions(folds=3))
    assert result.baseline == "refit"
    assert result.served is not None
    assert result.served.version == bundle_version(bundles.good)
    assert result.decision.current.version != result.served.version


def test_without_labelled_calls_nothing_is_promoted(bundles: Bundles, tmp_path: Path) -> None:
    """A log with nothing to learn from cannot promote, however the figures compare."""
    registry = ModelRegistry(tmp_path / "models", seed=bundles.shuffled)
    current = registry.promoted()
    empty = LogLabels((), 0, 0, 0, 0)
    result = retrain(make_settings(), empty, bundles.data, registry, RetrainOptions(folds=3))
    assert result.decision.quality_ok
    assert not result.promoted
    assert any("nothing new to learn" in r for r in result.decision.reasons())
    assert registry.state().history == (current,)


def _log_labels(data: Path) -> LogLabels:
    # Two logged questions; the second is a held-out prompt and must be left out.
    held = split_records(list(iter_records(data)), 0.2)[1]
    return LogLabels(
        (
            LoggedExample("log-1", "explain the quantum of the eigenvalue in a new case?", 2),
            LoggedExample("log-2", str(held[0]["prompt"]), 0),
        ),
        calls=2,
        without_text=0,
        without_evidence=0,
        duplicates=0,
    )


def test_retrain_promotes_a_better_candidate(bundles: Bundles, tmp_path: Path) -> None:
    """Over a shuffled-label current model, the candidate wins on both counts and is promoted."""
    registry = ModelRegistry(tmp_path / "models", seed=bundles.shuffled)
    current = registry.promoted()
    result = retrain(
        make_settings(), _log_labels(bundles.data), bundles.data, registry, RetrainOptions(folds=3)
    )
    decision = result.decision
    assert decision.candidate.quality > decision.current.quality
    assert decision.candidate.cost_per_query_usd <= decision.current.cost_per_query_usd
    assert result.promoted
    state = registry.state()
    assert state.history == (current, decision.candidate.version)
    assert state.events[-1].action == "promote"
    assert "1 logged questions are held-out prompts" in result.notes


def test_a_promoted_candidate_gets_the_served_bundles_cascade_calibration(
    bundles: Bundles, tmp_path: Path
) -> None:
    """Over a served bundle with the value policy, the promoted candidate ships one too,
    calibrated toward the same target, so promotion does not silently change Cascade.
    """
    from tierroute.offline.evaluation.calibration import CalibrationTarget
    from tierroute.offline.evaluation.pipeline import Options, calibrate

    served = tmp_path / "served"
    shutil.copytree(bundles.shuffled, served)
    # The served Cascade calibrated on outcomes moved to other prompts: its value policy has
    # learnt noise, so the candidate, calibrated on the log's real outcomes, serves better.
    records = list(iter_records(bundles.shuffled_data))
    moved = [r["models"] for r in records]
    random.Random(2).shuffle(moved)
    noise = write_dataset(
        tmp_path / "noise.jsonl.gz",
        [dict(r, models=m) for r, m in zip(records, moved, strict=True)],
    )
    target = CalibrationTarget.parse("max_cost_per_query", "0.6x")
    calibrate(
        noise,
        served / "thresholds.json",
        make_settings(),
        target,
        Options(folds=3, model_dir=served),
    )
    registry = ModelRegistry(tmp_path / "models", seed=served)
    result = retrain(
        make_settings(), _log_labels(bundles.data), bundles.data, registry, RetrainOptions(folds=3)
    )
    assert result.promoted
    promoted = registry.promoted_dir()
    cascade = json.loads((promoted / "thresholds.json").read_text())["cascade"]
    assert cascade["policy"] == "value"
    assert cascade["target"] == target.as_dict()
    assert (promoted / "value.onnx").is_file()
    assert any("Cascade was calibrated" in note for note in result.notes)
    # And the server loads what the registry now serves.
    assert RouterModel.load(promoted, 3).cascade_plan("Question 1: add the apples?") is not None


def test_retrain_refuses_a_worse_candidate_and_keeps_the_current(
    bundles: Bundles, tmp_path: Path
) -> None:
    """Trained on shuffled labels, the candidate loses to the good model and is not promoted."""
    registry = ModelRegistry(tmp_path / "models", seed=bundles.good)
    current = registry.promoted()
    result = retrain(
        make_settings(), ONE_LOGGED, bundles.shuffled_data, registry, RetrainOptions(folds=3)
    )
    assert result.baseline == "served"
    assert not result.promoted
    assert not result.decision.quality_ok
    assert registry.state().history == (current,)
    assert bundle_version(bundles.good) == current


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_retrain_parser(parser.add_subparsers())
    args = parser.parse_args(["retrain", *argv])
    code: int = args.func(args, make_settings(), {})
    return code


async def _labelled_log(tmp_path: Path) -> str:
    # Cheap and mid failed their judges; the user confirmed the top tier's answer: label 2.
    text = "explain the quantum of the eigenvalue in a new case?"
    record = sample_record(
        "log-1",
        query_text=text,
        query_sha256=hash_query(text),
        final_tier="expensive",
        hops=BOTH_FAILED,
    )
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    store = open_store(url)
    await store.migrate()
    await store.write_batch([record], [FeedbackRecord("log-1", correct=True)])
    await store.aclose()
    return url


async def test_cli_exits_0_when_it_promotes(
    bundles: Bundles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute retrain --json` prints the comparison and exits 0 on promotion."""
    url = await _labelled_log(tmp_path)
    registry = ModelRegistry(tmp_path / "models", seed=bundles.shuffled)
    registry.promoted()
    argv = ["--db", url, "--data", str(bundles.data), "--registry", str(registry.root),
            "--folds", "3", "--json"]  # fmt: skip
    assert await asyncio.to_thread(_run_cli, argv) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert printed["promoted"]
    assert printed["decision"]["candidate"]["version"] == registry.state().promoted


async def test_cli_dry_run_never_promotes(bundles: Bundles, tmp_path: Path) -> None:
    """With --dry-run the registry is left alone even when the candidate would pass."""
    url = await _labelled_log(tmp_path)
    registry = ModelRegistry(tmp_path / "models", seed=bundles.shuffled)
    current = registry.promoted()
    argv = ["--db", url, "--data", str(bundles.data), "--registry", str(registry.root),
            "--folds", "3", "--dry-run"]  # fmt: skip
    assert await asyncio.to_thread(_run_cli, argv) == 0
    assert registry.state().history == (current,)


def test_cli_without_a_registry_exits_2(bundles: Bundles) -> None:
    """No --registry and no routing.registry_dir: exit 2 before any work."""
    assert _run_cli(["--data", str(bundles.data)]) == 2


def test_training_file_is_gzip_json_lines(tmp_path: Path) -> None:
    """The candidate's training file reads back with the shared data reader."""
    path = tmp_path / "t.jsonl.gz"
    write_training_file(path, RECORDS[:3], [], n_tiers=3)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert [json.loads(line)["id"] for line in fh] == [r["id"] for r in RECORDS[:3]]
