"""Live labelling (`[shadow] label_rate`) through the real server: sampled calls are run
through every tier in the background and labelled into `tier_labels`, within a budget."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.fixtures import cascade_records
from tests.helpers import make_settings, postgres_or_skip, running_server
from tierroute.api.live_labels import LiveLabeller
from tierroute.api.workers import worker_settings
from tierroute.cascade.labelling import Labeller
from tierroute.errors import ConfigError
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import SqliteStore, TierLabel, open_store
from tierroute.querylog.doubles import temporary_schema
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

QUESTION = "What is the capital of France?"
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8", "claude-3-haiku-20240307")


def _env(tmp_path: Path) -> dict[str, str]:
    """The query log in `tmp_path`, every call sampled for labelling, $10 to spend."""
    return {
        "TIERROUTE_QUERYLOG_ENABLED": "true",
        "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
        "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
        "TIERROUTE_SHADOW_LABEL_RATE": "1.0",
        "TIERROUTE_SHADOW_LABEL_BUDGET_USD": "10",
    }


def _settings(tmp_path: Path, **shadow: str) -> Settings:
    env = {**_env(tmp_path), "TIERROUTE_ROUTING_DEFAULT_STRATEGY": "heuristic"}
    env.update({f"TIERROUTE_SHADOW_{k.upper()}": v for k, v in shadow.items()})
    return make_settings(env)


async def _labels(tmp_path: Path) -> list[TierLabel]:
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        return list(await store.fetch_tier_labels())
    finally:
        await store.aclose()


def _scripted(gate: asyncio.Event | None = None, questions: int = 4) -> ScriptedProvider:
    """Every tier and the probe state the same final answer, `questions` times."""
    provider = ScriptedProvider()
    for model in MODELS:
        provider.script(model, *[Reply.answer("The answer is (B).", gate=gate)] * questions)
    return provider


async def test_a_sampled_call_is_labelled_for_every_tier_into_tier_labels(tmp_path: Path) -> None:
    """A Route call at label_rate 1: each tier's and the probe's answer, labelled, stored."""
    settings = _settings(tmp_path)
    async with running_server(settings, provider=_scripted()) as s:
        response = await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="r-1"))
        assert s.server.labels is not None
        await s.server.labels.wait_idle()
    labels = await _labels(tmp_path)
    assert response.request_id == "r-1"
    assert sorted((lab.request_id, lab.tier, lab.verdict) for lab in labels) == [
        ("r-1", "cheap", "pass"),
        ("r-1", "expensive", "pass"),
        ("r-1", "mid", "pass"),
        ("r-1", "probe", "pass"),
    ]


async def test_a_labelled_call_keeps_its_text_for_export(tmp_path: Path) -> None:
    """The labelled call's record holds its question, so `export` can join the labels."""
    async with running_server(_settings(tmp_path), provider=_scripted()) as s:
        await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="r-1"))
        assert s.server.labels is not None
        await s.server.labels.wait_idle()
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        (record,) = await store.fetch_queries()
    finally:
        await store.aclose()
    assert record.query_text == QUESTION


async def test_the_budget_stops_live_labelling_before_it_is_passed(tmp_path: Path) -> None:
    """Room for one question's worst case: the first is labelled, the second never starts."""
    base = _settings(tmp_path)
    worst = Labeller(ScriptedProvider(), base, max_output_tokens=base.cascade.max_output_tokens)
    budget = worst.worst_case_usd(QUESTION, base.tiers) * 1.001
    settings = _settings(tmp_path, label_budget_usd=f"{budget:.9f}")
    async with running_server(settings, provider=_scripted()) as s:
        labels = s.server.labels
        assert labels is not None
        await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="r-1"))
        await labels.wait_idle()
        await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="r-2"))
        await labels.wait_idle()
        assert labels.stats.stopped_by_budget
        assert 0 < labels.budget.spent <= budget
    assert {lab.request_id for lab in await _labels(tmp_path)} == {"r-1"}


async def test_the_call_returns_while_its_labelling_is_held_and_shutdown_cancels_it(
    tmp_path: Path,
) -> None:
    """Labelling calls held open never delay the response; stopping the server cancels them."""
    gate = asyncio.Event()  # never set: the labelling calls stay open
    provider = _scripted(gate)
    async with running_server(_settings(tmp_path), provider=provider) as s:
        response = await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="r-1"))
        await provider.wait_for_calls(len(MODELS))
        assert response.tier.name
        assert all(call.outcome == "pending" for call in provider.calls)
    assert all(call.cancelled for call in provider.calls)
    assert await _labels(tmp_path) == []


async def test_unfamiliar_calls_are_labelled_before_familiar_ones(tmp_path: Path) -> None:
    """Queued behind a held question, an unfamiliar call offered last is labelled first."""
    settings = _settings(tmp_path)
    gate = asyncio.Event()
    provider = _scripted(gate, questions=3)
    store = SqliteStore(tmp_path / "log.sqlite3")
    await store.migrate()
    labeller = LiveLabeller(settings, provider, store=store, rng=random.Random(0))
    await labeller.start()
    try:
        labeller.offer("held", "Question held first?", unfamiliar=False)
        await provider.wait_for_calls(len(MODELS))
        labeller.offer("familiar", "A familiar question?", unfamiliar=False)
        labeller.offer("unfamiliar", "An unfamiliar question?", unfamiliar=True)
        gate.set()
        await labeller.wait_idle()
        stored = await store.fetch_tier_labels()
    finally:
        await labeller.aclose()
        await store.aclose()
    order = list(dict.fromkeys(lab.request_id for lab in stored))
    assert order == ["held", "unfamiliar", "familiar"]


def test_an_unfamiliar_call_is_always_sampled_and_a_familiar_one_at_the_rate(
    tmp_path: Path,
) -> None:
    """At a rate of 0.001 a familiar call is rarely drawn; an unfamiliar one always is."""
    settings = _settings(tmp_path, label_rate="0.001")
    labeller = LiveLabeller(settings, ScriptedProvider(), rng=random.Random(1))
    familiar = sum(labeller.wants(unfamiliar=False) for _ in range(1000))
    assert all(labeller.wants(unfamiliar=True) for _ in range(100))
    assert familiar < 10


def test_a_label_rate_without_a_budget_is_refused_in_one_line() -> None:
    """Live labelling spends money: label_rate with no label_budget_usd is a ConfigError."""
    with pytest.raises(ConfigError, match="label_budget_usd must be positive"):
        make_settings({"TIERROUTE_SHADOW_LABEL_RATE": "0.1"})


async def test_a_call_through_the_messages_door_is_labelled_too(
    tmp_path: Path, replay_data: Path
) -> None:
    """An Anthropic SDK call on the HTTP door is sampled and labelled like a gRPC one."""
    settings = make_settings(
        {
            **_env(tmp_path),
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
        }
    )
    question = str(cascade_records()[0]["prompt"])
    async with running_server(
        settings, scorer=StaticScorer((0.95, 0.03, 0.02)), environ={}, http=True
    ) as s:
        sdk = anthropic.AsyncAnthropic(base_url=s.http_url, api_key="unused", max_retries=0)
        try:
            await sdk.messages.create(
                model="tierroute",
                max_tokens=512,
                messages=[{"role": "user", "content": question}],
                extra_headers={"x-tierroute-request-id": "http-1"},
            )
        finally:
            await sdk.close()
        assert s.server.labels is not None
        await s.server.labels.wait_idle()
    labels = await _labels(tmp_path)
    assert {(lab.request_id, lab.tier) for lab in labels} >= {
        ("http-1", "cheap"),
        ("http-1", "mid"),
        ("http-1", "expensive"),
    }


@pytest.fixture
def pg_log_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL; skipped when unreachable, except under CI."""
    url = postgres_or_skip()
    with temporary_schema(url) as schema_url:
        yield schema_url


@pytest.mark.postgres
async def test_live_labels_land_in_postgresql_too(tmp_path: Path, pg_log_url: str) -> None:
    """With the query log on PostgreSQL, a sampled call's labels are stored there."""
    settings = make_settings(
        {
            **_env(tmp_path),
            "TIERROUTE_DB_URL": pg_log_url,
            "TIERROUTE_ROUTING_DEFAULT_STRATEGY": "heuristic",
        }
    )
    async with running_server(settings, provider=_scripted()) as s:
        await s.stub.Route(pb.RouteRequest(query=QUESTION, request_id="pg-1"))
        assert s.server.labels is not None
        await s.server.labels.wait_idle()
    store = open_store(pg_log_url)
    try:
        labels = await store.fetch_tier_labels()
    finally:
        await store.aclose()
    assert sorted(lab.tier for lab in labels if lab.request_id == "pg-1") == [
        "cheap",
        "expensive",
        "mid",
        "probe",
    ]


def test_each_worker_of_a_group_labels_within_its_share_of_the_budget() -> None:
    """serve --workers 4 with a $10 budget: each worker process may spend $2.50."""
    settings = make_settings(
        {"TIERROUTE_SHADOW_LABEL_RATE": "0.1", "TIERROUTE_SHADOW_LABEL_BUDGET_USD": "10"}
    )
    shares = [worker_settings(settings, slot, 4).shadow.label_budget_usd for slot in range(4)]
    assert shares == [2.5, 2.5, 2.5, 2.5]
