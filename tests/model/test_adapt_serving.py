"""Adapting through the real server and registry: Cascades over the replay backend are logged
on a SQLite file, `adapt` re-solves the operating points from that log, and a server that
watches the registry serves the new version without a restart; `[adapt] interval_s` does the
same in the server's background."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import cascade_records, write_dataset
from tests.helpers import Running, make_settings
from tests.model.adapt_support import SHIPPED, logged_server, run_adapt, shipped_actions
from tierroute.model import ModelRegistry
from tierroute.querylog import QueryLogWriter, open_store
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb


def exam_shaped(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their prompts in the shape of the shipped bundle's training prompts,
    so that it plans them (an unfamiliar query gets routing.on_unfamiliar's check instead)."""
    for record in records:
        record["prompt"] = (
            f"Question: {record['prompt']} Which of the following best describes it?\n"
            "Options: A. the first one B. the second one C. the third one D. none of the above\n"
            "Answer: Let's think step by step."
        )
    return records


RECORDS = exam_shaped(cascade_records(40))
PROMPTS = [str(r["prompt"]) for r in RECORDS]


def serving_settings(tmp_path: Path, **extra: str) -> Settings:
    """The shipped bundle behind a registry, the replay backend, the log on SQLite."""
    data = tmp_path / "replay.jsonl.gz"
    if not data.exists():
        write_dataset(data, RECORDS)
    return make_settings(
        {
            "TIERROUTE_MODEL_DIR": str(SHIPPED),
            "TIERROUTE_ROUTING_REGISTRY_DIR": str(tmp_path / "registry"),
            "TIERROUTE_ROUTING_REGISTRY_POLL_S": "0.05",
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_QUERYLOG_WRITER": "thread",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
            "TIERROUTE_REPLAY_DATA": str(data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            # The synthetic prompts are unfamiliar to a bundle that measures familiarity: plan
            # them anyway, so that the log holds the value plans adapt re-solves from.
            "TIERROUTE_ROUTING_ON_UNFAMILIAR": "classifier",
            **extra,
        }
    )


async def send_traffic(s: Running, writer: QueryLogWriter) -> list[pb.CascadeResponse]:
    """Every prompt through the Cascade RPC; stored in the log when this returns."""
    responses = [await s.stub.Cascade(pb.CascadeRequest(query=p)) for p in PROMPTS]
    await writer.flush()
    return responses


async def served(s: Running, version: str) -> None:
    """Until the server's registry watcher has swapped `version` in (bounded)."""
    deadline = time.monotonic() + 30
    while s.server.router is not None and s.server.router.model_version != version:
        assert time.monotonic() < deadline, f"{version} was not served within 30 s"
        await asyncio.sleep(0.02)


async def test_a_watching_server_serves_the_adapted_version(tmp_path: Path) -> None:
    """adapt promotes a new version; the running server picks it up from the registry and
    its default operating point's price is the adapted one."""
    settings = serving_settings(tmp_path)
    async with logged_server(settings) as (s, writer):
        first = await send_traffic(s, writer)
        result = await run_adapt(settings)
        assert result.promoted
        assert result.version is not None
        await served(s, result.version)
        again = await s.stub.Cascade(pb.CascadeRequest(query=PROMPTS[0]))
    registry = ModelRegistry.from_settings(settings)
    assert registry is not None
    assert registry.state().promoted == result.version
    parity = next(p for p in result.points if p.name == "parity")
    assert first[0].route.thresholds["price_per_correct_usd"] == pytest.approx(parity.price_before)
    assert again.route.model_version == result.version
    assert again.route.thresholds["price_per_correct_usd"] == pytest.approx(parity.price_after)
    assert parity.price_after != pytest.approx(parity.price_before)


async def test_before_figures_are_the_logged_decisions(tmp_path: Path) -> None:
    """At the served price the re-solve chooses what the server chose: the default point's
    "before" cost and start mix are those of the logged plans."""
    settings = serving_settings(tmp_path)
    async with logged_server(settings) as (s, writer):
        responses = await send_traffic(s, writer)
    result = await run_adapt(settings, dry_run=True)
    store = open_store(settings.querylog.url.get())
    try:
        plans = [r.value_plan for r in await store.fetch_queries() if r.value_plan]
    finally:
        await store.aclose()
    assert result.rows == len(plans) == len(responses)
    default = next(p for p in result.points if p.name == result.default_point)
    logged_cost = sum(p["cost_usd"][p["action"]] for p in plans) / len(plans)
    starts = [shipped_actions()[p["action"]].start for p in plans]
    assert default.before.cost_usd == pytest.approx(logged_cost, rel=1e-6)
    assert default.before.start_mix == pytest.approx(
        [starts.count(t) / len(plans) for t in range(3)]
    )
    assert result.baselines["as_logged"].cost_usd == pytest.approx(logged_cost, rel=1e-6)
    assert result.version is None


async def test_adapting_the_same_log_again_changes_nothing(tmp_path: Path) -> None:
    """A second run on the same log finds the points where the first put them: no version."""
    settings = serving_settings(tmp_path)
    async with logged_server(settings) as (s, writer):
        await send_traffic(s, writer)
    first = await run_adapt(settings)
    second = await run_adapt(settings)
    assert first.promoted
    assert second.version is None
    assert "nothing changed" in second.note
    assert second.served_version == first.version


async def test_the_interval_loop_adapts_in_the_background(tmp_path: Path) -> None:
    """With adapt.interval_s on, the server adapts from its own log and serves the result,
    while it keeps answering."""
    settings = serving_settings(
        tmp_path,
        TIERROUTE_ADAPT_INTERVAL_S="0.05",
        TIERROUTE_ADAPT_MIN_DECISIONS=str(len(PROMPTS)),
        TIERROUTE_ROUTING_REGISTRY_POLL_S="0",
    )
    async with logged_server(settings) as (s, writer):
        assert s.server.adapter is not None
        before = s.server.router.model_version if s.server.router else ""
        await send_traffic(s, writer)
        deadline = time.monotonic() + 30
        while s.server.adapter.last is None or not s.server.adapter.last.promoted:
            assert time.monotonic() < deadline, "the adapt loop promoted nothing within 30 s"
            await asyncio.sleep(0.02)
        version = s.server.adapter.last.version
        answer = await s.stub.Cascade(pb.CascadeRequest(query=PROMPTS[1]))
    assert version is not None
    assert version != before
    assert answer.route.model_version == version
