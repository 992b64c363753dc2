"""Drift: the model's vocabulary, the four measures, shifted and unshifted logs, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings, running_server
from tierroute.model.reload import LoadedModel, load_model
from tierroute.model.vocabulary import Vocabulary, onnx_unigrams
from tierroute.offline.cli.operations import add_drift_parser
from tierroute.offline.drift import (
    DriftThresholds,
    RecentTraffic,
    compare,
    reference_from_file,
    total_variation,
)
from tierroute.outcomes import iter_records
from tierroute.querylog import QueryRecord, hash_query, open_store
from tierroute.querylog.doubles import sample_record
from tierroute.routing import is_unfamiliar
from tierroute.routing.features import query_type
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb

TIERS = ("cheap", "mid", "expensive")


@dataclass(frozen=True)
class Trained:
    """A tiny trained bundle, its data file, the loaded model, and the fitted pipeline."""

    bundle: Path
    data: Path
    model: LoadedModel
    sklearn_words: frozenset[str]
    dense_graph: bytes  # the same pipeline as skl2onnx exports it (a TfIdfVectorizer)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train on 300 synthetic records (2 folds) and load the bundle as the server does."""
    from tierroute.offline.training.export import to_onnx
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("drift")
    data = write_dataset(root / "small.jsonl.gz", make_records(300))
    result = train_bundle(
        data, root / "bundle", TrainOptions(folds=2, compare_none_labels=False, progress=False)
    )
    vocabulary = result.pipeline.named_steps["tfidf"].vocabulary_
    words = frozenset(term for term in vocabulary if " " not in term)
    return Trained(
        root / "bundle", data, load_model(root / "bundle", 3), words, to_onnx(result.pipeline)
    )


def served_record(index: int, prompt: str, model: LoadedModel) -> QueryRecord:
    """What the server logs for a Route call of `prompt` decided by `model`."""
    assert model.vocabulary is not None
    scored = model.scorer.score(prompt)
    return sample_record(
        f"r{index}",
        kind="route",
        query_sha256=hash_query(prompt),
        query_chars=len(prompt),
        scores=scored.probs,
        model_version=model.scorer.version,
        query_type=query_type(prompt),
        vocab_coverage=model.vocabulary.coverage(prompt),
        hops=[],
        familiarity=scored.familiarity,
        unfamiliar=is_unfamiliar(scored.familiarity, model.scorer.familiarity_threshold),
    )


def shifted_record(index: int, model: LoadedModel) -> QueryRecord:
    """A call unlike the training data: sure it needs the top tier, coding, unknown words,
    unfamiliar."""
    return sample_record(
        f"s{index}",
        kind="route",
        scores=[0.02, 0.03, 0.95],
        model_version=model.scorer.version,
        query_type="coding",
        vocab_coverage=0.4,
        hops=[],
        familiarity=0.0,
        unfamiliar=True,
    )


def traffic(trained: Trained, records: list[QueryRecord]) -> RecentTraffic:
    """Count `records` the way `tierroute drift` counts the log."""
    recent = RecentTraffic(trained.model.scorer.version, trained.model.scorer.thresholds, TIERS)
    for record in records:
        recent.add(record)
    return recent


def test_the_vocabulary_read_from_onnx_is_the_trained_one(trained: Trained) -> None:
    """The words read from model.onnx's protobuf are the fitted vectorizer's single words."""
    words = onnx_unigrams((trained.bundle / "model.onnx").read_bytes())
    assert words == trained.sklearn_words


def test_the_vocabulary_matches_the_onnx_package(trained: Trained) -> None:
    """The wire-format reader agrees with the onnx package's own parser, on the served
    graph (a LabelEncoder's keys) and on skl2onnx's (a TfIdfVectorizer's pool)."""
    import onnx

    served = (trained.bundle / "model.onnx").read_bytes()
    graph = onnx.load_from_string(served).graph
    (node,) = (n for n in graph.node if n.op_type == "LabelEncoder")
    (keys,) = (a.strings for a in node.attribute if a.name == "keys_strings")
    assert onnx_unigrams(served) == frozenset(k.decode() for k in keys if b" " not in k)

    graph = onnx.load_from_string(trained.dense_graph).graph
    (node,) = (n for n in graph.node if n.op_type == "TfIdfVectorizer")
    attributes = {a.name: a for a in node.attribute}
    starts = list(attributes["ngram_counts"].ints)
    pool = [s.decode() for s in attributes["pool_strings"].strings]
    expected = frozenset(pool[starts[0] : starts[1]])
    assert onnx_unigrams(trained.dense_graph) == expected == trained.sklearn_words


def test_coverage_is_the_share_of_known_words() -> None:
    """'Capital of France, zz!' has 4 words the model reads, 2 of them known: 0.5."""
    vocabulary = Vocabulary(frozenset({"capital", "france"}), prefix_chars=4096)
    assert vocabulary.coverage("Capital of France, zz!") == 0.5
    assert vocabulary.coverage("? !") is None


def test_total_variation_is_half_the_l1_distance() -> None:
    """TV of {a .5, b .5} and {a .2, b .3, c .5} is (0.3 + 0.2 + 0.5) / 2 = 0.5."""
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.2, "b": 0.3, "c": 0.5}) == 0.5


def test_traffic_like_the_training_data_has_not_shifted(trained: Trained) -> None:
    """The training prompts served as traffic give a distance of zero on every measure."""
    model = trained.model
    reference = reference_from_file(trained.data, model.scorer, model.vocabulary, TIERS)
    prompts = [str(r["prompt"]) for r in iter_records(trained.data)]
    recent = traffic(trained, [served_record(i, p, model) for i, p in enumerate(prompts)])
    report = compare(reference, recent, DriftThresholds())
    assert not report.shifted
    assert [(m.name, m.status) for m in report.measures] == [
        ("predicted_tier_mix", "ok"),
        ("query_type_mix", "ok"),
        ("vocabulary_coverage", "ok"),
        ("unfamiliar_share", "ok"),
    ]
    assert [m.distance for m in report.measures] == pytest.approx([0.0] * 4, abs=1e-9)


def test_a_shifted_log_is_detected_on_every_measure(trained: Trained) -> None:
    """All-top, all-coding, all-unfamiliar traffic at 40 % coverage shifts the tier mix, type
    mix, coverage and unfamiliar share."""
    model = trained.model
    reference = reference_from_file(trained.data, model.scorer, model.vocabulary, TIERS)
    recent = traffic(trained, [shifted_record(i, model) for i in range(100)])
    report = compare(reference, recent, DriftThresholds())
    measures = {m.name: m for m in report.measures}
    assert report.shifted
    assert {m.name for m in report.measures if m.shifted} == set(measures)
    tier = measures["predicted_tier_mix"]
    assert tier.distance == pytest.approx(1.0 - reference.tier_mix["expensive"])
    assert tier.recent == {"cheap": 0.0, "mid": 0.0, "expensive": 1.0}
    assert measures["query_type_mix"].distance == pytest.approx(
        1.0 - reference.type_mix.get("coding", 0.0)
    )
    assert reference.coverage is not None
    assert measures["vocabulary_coverage"].distance == pytest.approx(reference.coverage - 0.4)
    assert reference.unfamiliar is not None
    assert measures["unfamiliar_share"].distance == pytest.approx(1.0 - reference.unfamiliar)


def test_too_few_records_say_so_instead_of_guessing(trained: Trained) -> None:
    """Below min_records a measure is 'insufficient_data', never 'shifted'."""
    model = trained.model
    reference = reference_from_file(trained.data, model.scorer, model.vocabulary, TIERS)
    recent = traffic(trained, [shifted_record(i, model) for i in range(10)])
    report = compare(reference, recent, DriftThresholds(min_records=50))
    assert not report.shifted
    assert {m.status for m in report.measures} == {"insufficient_data"}


def test_calls_routed_by_other_versions_are_left_out_of_the_tier_mix(trained: Trained) -> None:
    """Scores of another model version are not comparable, so they are counted apart."""
    records = [
        sample_record(f"o{i}", kind="route", model_version="other", vocab_coverage=0.1)
        for i in range(5)
    ]
    recent = traffic(trained, records)
    assert (sum(recent.tiers.values()), recent.coverages, recent.other_versions) == (0, [], 5)
    assert sum(recent.types.values()) == 5


def _run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    add_drift_parser(parser.add_subparsers())
    args = parser.parse_args(["drift", *argv])
    code: int = args.func(args, settings, {})
    return code


async def _cli_on_log(
    trained: Trained, tmp_path: Path, records: list[QueryRecord], *extra: str
) -> int:
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    store = open_store(url)
    await store.migrate()
    await store.write_batch(records, [])
    await store.aclose()
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(trained.bundle)})
    argv = ["--db", url, "--data", str(trained.data), "--since", "all", *extra]
    return await asyncio.to_thread(_run_cli, argv, settings)


async def test_cli_exits_3_on_a_shifted_log(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute drift --json` names every shifted measure and exits 3."""
    records = [shifted_record(i, trained.model) for i in range(60)]
    assert await _cli_on_log(trained, tmp_path, records, "--json") == 3
    printed = json.loads(capsys.readouterr().out)
    assert printed["shifted_measures"] == [
        "predicted_tier_mix",
        "query_type_mix",
        "vocabulary_coverage",
        "unfamiliar_share",
    ]


async def test_cli_exits_0_on_an_unshifted_log(trained: Trained, tmp_path: Path) -> None:
    """`tierroute drift` on traffic like the training data exits 0."""
    prompts = [str(r["prompt"]) for r in iter_records(trained.data)]
    records = [served_record(i, p, trained.model) for i, p in enumerate(prompts)]
    assert await _cli_on_log(trained, tmp_path, records) == 0


# -- what the server logs for drift ----------------------------------------------------------


async def _one_route(trained: Trained, tmp_path: Path, rate: str) -> Any:
    settings = make_settings(
        {
            "TIERROUTE_MODEL_DIR": str(trained.bundle),
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'served.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "TIERROUTE_QUERYLOG_COVERAGE_SAMPLE_RATE": rate,
        }
    )
    async with running_server(settings) as s:
        await s.stub.Route(pb.RouteRequest(query="Explain the capital of Mars, zz?"), timeout=30)
    store = open_store(settings.querylog.url.get())
    (record,) = await store.fetch_queries()
    await store.aclose()
    return record


async def test_the_server_logs_coverage_as_a_number_not_text(
    trained: Trained, tmp_path: Path
) -> None:
    """With coverage_sample_rate = 1 a Route record holds the coverage and no query text."""
    record = await _one_route(trained, tmp_path, "1")
    assert trained.model.vocabulary is not None
    expected = trained.model.vocabulary.coverage("Explain the capital of Mars, zz?")
    assert record.vocab_coverage == pytest.approx(expected)
    assert 0.0 < record.vocab_coverage < 1.0
    assert record.query_text is None


async def test_a_call_outside_the_coverage_sample_logs_none(
    trained: Trained, tmp_path: Path
) -> None:
    """With coverage_sample_rate = 0 no coverage is computed or logged."""
    record = await _one_route(trained, tmp_path, "0")
    assert record.vocab_coverage is None
