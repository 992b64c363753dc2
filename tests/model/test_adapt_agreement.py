"""Adapting a value policy with the agreement checks: its probe is one more payer of its
prices, and an open-ended prompt's plan could not take them. Through the real server over
the replay backend: the log keeps the plans' masks, adapt re-solves and writes a version
whose prices a server loads and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import add_agreement_value_model, make_records, write_dataset
from tests.helpers import make_settings
from tests.model.adapt_support import logged_server, run_adapt
from tierroute.model import ModelRegistry
from tierroute.querylog import open_store
from tierroute.routing import VALUE_ACTIONS, agreement_applies
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb

PROBE_KEY = "gpt-4o-mini-2024-07-18"
OPEN_ENDED = "Explain the capital of the river in case 12, then the colour of the animal."


@pytest.fixture(scope="module")
def agreement_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A small bundle whose value model is fitted over VALUE_ACTIONS with the probe as a
    fourth payer: the agreement check and the top tier end right, the cheap tier on half."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("adapt-agreement")
    records = make_records(300)
    for record in records:
        probe = dict(record["models"][record["tiers"]["cheap"]], canonical_model=PROBE_KEY)
        record["models"][PROBE_KEY] = probe
    data = write_dataset(root / "small.jsonl.gz", records)
    bundle = root / "bundle"
    train_bundle(data, bundle, TrainOptions(folds=2, compare_none_labels=False, progress=False))
    prompts = [str(r["prompt"]) for r in records]
    n, n_actions = len(prompts), len(VALUE_ACTIONS)
    quality = np.zeros((n, n_actions))
    quality[::2, 0] = 1.0
    quality[:, [a.judge == "agree" or a.start == 2 for a in VALUE_ACTIONS]] = 1.0
    tokens = np.zeros((n, n_actions, 4, 4))
    for index, action in enumerate(VALUE_ACTIONS):
        tokens[:, index, action.start, :2] = (200.0, 100.0 * (1 + action.start))
        if action.judge in ("agree", "agree_mid"):
            tokens[:, index, 3, :2] = (200.0, 100.0)
    add_agreement_value_model(bundle, prompts, quality, tokens)
    return bundle, data, prompts


def agreement_settings(tmp_path: Path, bundle: Path, data: Path) -> Settings:
    """The bundle behind a watched registry, the replay backend, the log on SQLite."""
    return make_settings(
        {
            "TIERROUTE_MODEL_DIR": str(bundle),
            "TIERROUTE_ROUTING_REGISTRY_DIR": str(tmp_path / "registry"),
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_QUERYLOG_WRITER": "thread",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
            "TIERROUTE_REPLAY_DATA": str(data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
        }
    )


async def test_adapting_a_policy_with_a_probe_serves_its_new_prices(
    tmp_path: Path, agreement_bundle: tuple[Path, Path, list[str]]
) -> None:
    """Plans over the agreement actions are logged with an open-ended prompt's mask; adapt's
    version keeps the probe's prices beside the tiers' and a server loads and serves it."""
    bundle, data, prompts = agreement_bundle
    settings = agreement_settings(tmp_path, bundle, data)
    assert not agreement_applies(OPEN_ENDED)
    async with logged_server(settings) as (s, writer):
        for query in [*prompts[:30], OPEN_ENDED]:
            await s.stub.Cascade(pb.CascadeRequest(query=query))
        await writer.flush()
    store = open_store(settings.querylog.url.get())
    try:
        plans = [r.value_plan for r in await store.fetch_queries() if r.value_plan]
    finally:
        await store.aclose()
    masks = [plan["allowed"] for plan in plans if "allowed" in plan]
    assert len(plans) == 31
    assert masks == [[a.judge not in ("agree", "agree_mid") for a in VALUE_ACTIONS]]
    result = await run_adapt(settings)
    assert result.promoted
    registry = ModelRegistry.from_settings(settings)
    assert registry is not None
    adapted = json.loads((registry.promoted_dir() / "thresholds.json").read_text())
    prices = adapted["cascade"]["value"]["prices"]["input_usd_per_mtok"]
    assert len(prices) == 4
    async with logged_server(settings) as (s, _):
        answer = await s.stub.Cascade(pb.CascadeRequest(query=prompts[0]))
    parity = next(p for p in result.points if p.name == "parity")
    assert answer.route.model_version == result.version
    assert answer.route.thresholds["price_per_correct_usd"] == pytest.approx(parity.price_after)
