"""The cascade end to end: the real Anthropic SDK against a real replay server on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import TRIO, make_record, write_dataset
from tierroute.cascade.engine import CascadeEngine, CascadeQuery
from tierroute.errors import DeadlineExceeded
from tierroute.providers.anthropic import build_provider
from tierroute.providers.replay import (
    FAULT_HEADER,
    FAULT_KEY_HEADER,
    ReplayServer,
    ReplayStats,
    ReplayStore,
)
from tierroute.providers.scripted import RecordingProvider
from tierroute.routing.policy import Reason
from tierroute.routing.router import RouteQuery, Router
from tierroute.settings import CascadeConfig, ReplayConfig, RoutingConfig, Settings, TierConfig

CHEAP, MID, TOP = "cheap-model", "mid-model", "top-model"
TIERS = (
    TierConfig("cheap", CHEAP, 1.0, 5.0),
    TierConfig("mid", MID, 3.0, 15.0),
    TierConfig("top", TOP, 15.0, 75.0),
)
# What each tier's recorded model answered, cheapest first (None: no final answer).
CASES: dict[str, tuple[str | None, str | None, str | None]] = {
    "easy": ("A", "A", "A"),
    "once": ("B", "A", "A"),
    "twice": ("B", "C", "A"),
    "unsure": (None, "A", "A"),
}


def question(case: str) -> str:
    # Factual by the keyword classifier, so the heuristic routes it to the cheap tier.
    return f"Record {case}: which option names the river in case {case}?"


def recorded_response(model: str, pred: str | None) -> str:
    if pred is None:
        return f"Reasoning by {model}, which reaches no conclusion."
    return f"Reasoning by {model}. The answer is ({pred})."


def case_record(index: int, case: str) -> dict[str, Any]:
    record = make_record(index, random.Random(index))
    record["id"] = f"toy_facts/{case}"
    record["prompt"] = question(case)
    for model_key, pred in zip(TRIO.values(), CASES[case], strict=True):
        record["models"][model_key]["pred"] = pred
        record["models"][model_key]["response"] = recorded_response(model_key, pred)
    return record


@pytest.fixture(scope="module")
def case_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recorded-outcome file holding one record per case."""
    path = tmp_path_factory.mktemp("replay") / "cases.jsonl.gz"
    return write_dataset(path, [case_record(i, case) for i, case in enumerate(CASES)])


class RecordingSleep:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@dataclass
class Stack:
    """An engine wired to a replay server through the real SDK."""

    engine: CascadeEngine
    provider: RecordingProvider
    server: ReplayServer
    sleep: RecordingSleep

    async def wait_for(self, predicate: Callable[[ReplayStats], bool]) -> None:
        """Block (off the event loop) until the server's counters satisfy `predicate`."""
        assert await asyncio.to_thread(self.server.wait_for, predicate, 30.0)


@asynccontextmanager
async def replay_stack(
    data: Path,
    *,
    replay: Mapping[str, Any] | None = None,
    extra_headers: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    gates: Mapping[tuple[str, str], asyncio.Event] | None = None,
    **cascade: Any,
) -> AsyncIterator[Stack]:
    """Start a replay server on port 0 and an engine whose provider is the real SDK."""
    replay_config = ReplayConfig(data=data, port=0, **{"time_scale": 0.0, **(replay or {})})
    settings = Settings(
        tiers=TIERS,
        cascade=CascadeConfig(**cascade),
        routing=RoutingConfig(default_strategy="heuristic", session_sticky=False),
        replay=replay_config,
    )
    server = ReplayServer(ReplayStore.load(data), TIERS, replay_config)
    server.start()
    provider = RecordingProvider(
        build_provider(settings, base_url=server.base_url), extra_headers, gates
    )
    sleep = RecordingSleep()
    engine = CascadeEngine(settings, Router(settings, None), provider, sleep=sleep)
    try:
        yield Stack(engine, provider, server, sleep)
    finally:
        await provider.aclose()
        await asyncio.to_thread(server.stop)


def query(case: str, **kwargs: Any) -> CascadeQuery:
    text = question(case) if case in CASES else case
    kwargs.setdefault("judge_mode", "always")
    kwargs.setdefault("speculation", "off")
    return CascadeQuery(route=RouteQuery(text=text), **kwargs)


def recorded(tier: int, case: str) -> str:
    model_key = list(TRIO.values())[tier]
    return recorded_response(model_key, CASES[case][tier])


async def test_pass_on_cheap_tier(case_data: Path) -> None:
    """The judge's own recorded answer agrees with the cheap one: answered on cheap."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("easy"), deadline_s=30)
    assert (result.answer, result.tier.name, result.judge_status) == (
        recorded(0, "easy"),
        "cheap",
        "passed",
    )
    assert all(h.input_tokens > 0 and h.cost_usd > 0 for h in result.hops)


async def test_escalate_once(case_data: Path) -> None:
    """A cheap answer the mid judge disagrees with escalates to mid, which the top passes."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("once"), deadline_s=30)
    assert (result.answer, result.tier.name, result.judge_status) == (
        recorded(1, "once"),
        "mid",
        "passed",
    )
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_FAILED]
    assert "disagrees" in result.hops[1].issues[0]


async def test_escalate_twice(case_data: Path) -> None:
    """Two failed verdicts reach the top tier, whose answer is returned unjudged."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("twice"), deadline_s=30)
    assert (result.answer, result.tier.name, result.judge_status) == (
        recorded(2, "twice"),
        "top",
        "not_required",
    )
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_FAILED] * 2


async def test_malformed_judge_output_escalates(case_data: Path) -> None:
    """A malformed verdict injected by header counts as unavailable and escalates."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(
            query("easy", headers={FAULT_HEADER: "malformed_judge@mid"}), deadline_s=30
        )
    assert result.hops[1].verdict == "unavailable"
    assert result.tier.name == "mid"
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_UNAVAILABLE]
    assert "judge_unavailable:mid" in result.degraded_reasons


async def test_sampled_out_answer_is_not_judged(case_data: Path) -> None:
    """With a zero sample rate the cheap answer comes back sampled out after one call."""
    async with replay_stack(case_data, judge_sample_rate=0.0) as stack:
        result = await stack.engine.run(query("once", judge_mode="default"), deadline_s=30)
        assert stack.server.stats().requests == 1
    assert (result.tier.name, result.judge_status) == ("cheap", "sampled_out")


async def test_speculative_call_cancelled_when_cheap_passes(case_data: Path) -> None:
    """The mid answer held open at the server is cancelled once the cheap answer passes, and
    billed the prompt it was sent."""
    judge_gate = asyncio.Event()
    async with replay_stack(
        case_data,
        extra_headers={(MID, "answer"): {FAULT_HEADER: "timeout"}},
        gates={(MID, "judge"): judge_gate},
    ) as stack:
        task = asyncio.create_task(stack.engine.run(query("easy", speculation="on"), deadline_s=30))
        # Both the cheap answer and the speculative mid answer have reached the server.
        await stack.wait_for(lambda s: s.requests >= 2)
        judge_gate.set()
        result = await task
        await stack.wait_for(lambda s: s.disconnected >= 1)
    assert result.judge_status == "passed"
    spec = next(h for h in result.hops if h.speculative)
    assert (spec.tier, spec.outcome, spec.output_tokens) == ("mid", "cancelled", 0)
    assert spec.input_tokens > 0  # the server read the prompt: billed as read, never free
    assert spec.cost_usd > 0
    assert stack.provider.calls_to(MID, "answer")[0].cancelled


async def test_speculative_call_used_when_cheap_fails(case_data: Path) -> None:
    """When the cheap answer fails, the mid answer already in flight is used."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("once", speculation="on"), deadline_s=30)
        requests = stack.server.stats().requests
    assert (result.tier.name, result.judge_status) == ("mid", "passed")
    assert len(stack.provider.calls_to(MID, "answer")) == 1
    # cheap answer, speculative mid answer, mid judge, top judge: no second mid answer.
    assert requests == 4
    assert next(h for h in result.hops if h.role == "answer" and h.tier == "mid").speculative


async def test_rate_limited_top_tier_retries_after_retry_after(case_data: Path) -> None:
    """A 429 with retry-after on the top tier is retried after that wait and then answers."""
    headers = {FAULT_HEADER: "429:2*1@top", FAULT_KEY_HEADER: "retry-after-test"}
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(
            query("easy", start_tier="top", headers=headers), deadline_s=30
        )
    assert stack.sleep.delays == [2.0]
    assert [(h.outcome, h.error_kind) for h in result.hops] == [
        ("error", "rate_limited"),
        ("ok", ""),
    ]
    assert result.answer == recorded(2, "easy")


async def test_overloaded_cheap_tier_falls_over_to_mid(case_data: Path) -> None:
    """A 529 on the cheap tier moves straight to mid with no back-off."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(
            query("easy", headers={FAULT_HEADER: "529@cheap"}), deadline_s=30
        )
    assert stack.sleep.delays == []
    assert (result.tier.name, result.judge_status) == ("mid", "passed")
    assert result.hops[0].error_kind == "overloaded"
    assert [r.code for r in result.escalation_reasons] == [Reason.PROVIDER_ERROR]


async def test_deadline_exceeded_cancels_the_http_call(case_data: Path) -> None:
    """A reply slower than the deadline ends in DeadlineExceeded and a dropped request."""
    slow = {"time_scale": 1.0, "ttft_s": (60.0, 60.0, 60.0)}
    async with replay_stack(case_data, replay=slow) as stack:
        with pytest.raises(DeadlineExceeded):
            await stack.engine.run(query("easy"), deadline_s=0.05)
        await stack.wait_for(lambda s: s.disconnected >= 1)
    assert stack.provider.calls[0].cancelled


async def test_client_cancellation_cancels_every_http_call(case_data: Path) -> None:
    """Cancelling the request drops the primary and the speculative HTTP call alike."""
    async with replay_stack(case_data) as stack:
        task = asyncio.create_task(
            stack.engine.run(
                query("easy", speculation="on", headers={FAULT_HEADER: "timeout"}), deadline_s=30
            )
        )
        await stack.wait_for(lambda s: s.in_flight >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stack.wait_for(lambda s: s.disconnected >= 2)
    assert [c.outcome for c in stack.provider.calls] == ["cancelled", "cancelled"]


async def test_self_routing_accepts_confident_answer(case_data: Path) -> None:
    """The replayed model's confidence block accepts the answer, stripped of the block."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("easy", self_routing=True), deadline_s=30)
    assert (result.answer, result.judge_status) == (recorded(0, "easy"), "self_accepted")
    assert len(result.hops) == 1


async def test_self_routing_escalates_without_final_answer(case_data: Path) -> None:
    """A model that reached no answer asks to escalate; mid answers and is judged."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("unsure", self_routing=True), deadline_s=30)
    assert (result.tier.name, result.judge_status) == ("mid", "passed")
    assert [r.code for r in result.escalation_reasons] == [Reason.SELF_LOW_CONFIDENCE]


async def test_unknown_prompt_gets_synthetic_answer_and_a_real_verdict(case_data: Path) -> None:
    """A prompt not in the data is answered synthetically and judged pass or fail."""
    async with replay_stack(case_data) as stack:
        result = await stack.engine.run(query("Name a river in Peru."), deadline_s=30)
    assert "not in the replay data" in result.answer
    judges = [h for h in result.hops if h.role == "judge"]
    assert judges
    assert all(h.verdict in ("pass", "fail") for h in judges)
    assert result.judge_status in ("passed", "not_required")
