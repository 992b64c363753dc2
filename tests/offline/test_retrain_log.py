"""`tierroute retrain` from the log alone: trained on `tierroute label`'s rows, gated on the
most recent labelled questions held out by time, promoted only when not worse."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings
from tierroute.model.registry import ModelRegistry
from tierroute.offline.cli.operations import add_retrain_parser
from tierroute.outcomes import TIER_KEYS
from tierroute.querylog import TierLabel, hash_query, open_store
from tierroute.querylog.doubles import sample_record

RECORDS = make_records(240, seed=11)
START = datetime(2026, 11, 1, tzinfo=UTC)
SETTINGS = make_settings()


@dataclass(frozen=True)
class Bundles:
    """A model trained on the true labels and one trained on shuffled labels."""

    good: Path
    shuffled: Path


def _shuffled(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The records with their outcomes dealt to other questions: labels that teach nothing."""
    models = [r["models"] for r in records]
    labels = [r["min_tier_correct"] for r in records]
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [
        dict(r, models=models[i], min_tier_correct=labels[i])
        for r, i in zip(records, order, strict=True)
    ]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Train both served candidates once for the module."""
    from tierroute.offline.training.calibrate import Target
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("retrain-log")
    options = TrainOptions(
        folds=3, target=Target("max_cost_ratio", 0.7), compare_none_labels=False, progress=False
    )
    good = write_dataset(root / "good.jsonl.gz", RECORDS)
    bad = write_dataset(root / "bad.jsonl.gz", _shuffled(RECORDS, 3))
    train_bundle(good, root / "good", options)
    train_bundle(bad, root / "shuffled", options)
    return Bundles(root / "good", root / "shuffled")


async def labelled_log(path: Path, records: list[dict[str, Any]]) -> str:
    """A log holding each record's question (in time order) and its tiers' labels."""
    url = f"sqlite:///{path}"
    store = open_store(url)
    await store.migrate()
    queries, labels = [], []
    for i, record in enumerate(records):
        rid = f"q-{i:04d}"
        text = record["prompt"]
        queries.append(
            sample_record(
                rid,
                query_text=text,
                query_sha256=hash_query(text),
                ts=START + timedelta(minutes=i),
                query_type="factual",
            )
        )
        for tier, key in zip(SETTINGS.tiers, TIER_KEYS, strict=True):
            outcome = record["models"][record["tiers"][key]]
            labels.append(
                TierLabel(
                    request_id=rid,
                    tier=tier.name,
                    model=tier.model,
                    answer_text=outcome["response"],
                    input_tokens=outcome["input_tokens"],
                    output_tokens=outcome["output_tokens"],
                    cost_usd=tier.cost_usd(outcome["input_tokens"], outcome["output_tokens"]),
                    judge_tier="expensive",
                    judge_model=SETTINGS.tiers[-1].model,
                    verdict="pass" if outcome["correct"] else "fail",
                )
            )
    await store.write_batch(queries, [])
    await store.write_tier_labels(labels)
    await store.aclose()
    return url


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_retrain_parser(parser.add_subparsers())
    args = parser.parse_args(["retrain", *argv])
    code: int = args.func(args, SETTINGS, {})
    return code


async def retrain_cli(url: str, registry: ModelRegistry, *extra: str) -> int:
    """`tierroute retrain` with no --data: the log alone."""
    argv = ["--db", url, "--registry", str(registry.root), "--folds", "3", *extra]
    return await asyncio.to_thread(_run_cli, argv)


async def test_a_better_candidate_from_the_log_alone_is_promoted(
    bundles: Bundles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Served a model of shuffled labels, the log's labels train a better one: promoted."""
    url = await labelled_log(tmp_path / "log.sqlite3", RECORDS)
    registry = ModelRegistry(tmp_path / "models", seed=bundles.shuffled)
    served = registry.promoted()
    assert await retrain_cli(url, registry, "--margin-cost", "10", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["promoted"]
    assert doc["evaluation"]["held_out_records"] == 48
    assert doc["decision"]["candidate"]["quality"] > doc["decision"]["current"]["quality"]
    assert registry.state().promoted != served


async def test_a_worse_candidate_from_the_log_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """Older labels that teach nothing, the newest true: the candidate loses and stays out."""
    held = len(RECORDS) // 5
    records = _shuffled(RECORDS[:-held], 5) + RECORDS[-held:]
    url = await labelled_log(tmp_path / "log.sqlite3", records)
    registry = ModelRegistry(tmp_path / "models", seed=bundles.good)
    served = registry.promoted()
    assert await retrain_cli(url, registry) == 3
    assert registry.state().history == (served,)


async def test_too_few_labels_exit_2_with_the_reason(
    tmp_path: Path, bundles: Bundles, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log with a handful of labelled questions cannot hold a test set out: exit 2."""
    url = await labelled_log(tmp_path / "log.sqlite3", RECORDS[:10])
    registry = ModelRegistry(tmp_path / "models", seed=bundles.good)
    assert await retrain_cli(url, registry) == 2
    assert "needs at least 40 labelled questions" in capsys.readouterr().err
