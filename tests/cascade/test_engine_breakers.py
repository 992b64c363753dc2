"""Circuit breakers inside the cascade engine: skipping, recovery, degradation, the metric.

The provider is scripted (`ScriptedProvider`) and the breakers' clock is driven by hand; the
breaker states as the server's health checking reports them are in tests/api/test_health.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.helpers import FakeClock
from tierroute.cascade.breaker import BreakerBoard
from tierroute.cascade.engine import CascadeEngine, CascadeQuery, CascadeResult
from tierroute.errors import AllTiersFailed, ProviderOverloaded, TerminalProviderError
from tierroute.observability.metrics import BREAKER_STATE, Metrics
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing.policy import Reason
from tierroute.routing.router import RouteQuery, Router
from tierroute.settings import BreakerConfig, CascadeConfig, RoutingConfig, Settings, TierConfig

CHEAP, MID, TOP = "cheap-model", "mid-model", "top-model"
TIERS = (
    TierConfig("cheap", CHEAP, 1.0, 5.0),
    TierConfig("mid", MID, 3.0, 15.0),
    TierConfig("top", TOP, 15.0, 75.0),
)
QUESTION = "What is the capital of France?"
COOLDOWN_S = 10.0


def overloaded() -> Reply:
    return Reply.fail(ProviderOverloaded("overloaded", status_code=529))


def build(
    provider: ScriptedProvider,
    clock: FakeClock,
    *,
    metrics: Metrics | None = None,
    board: BreakerBoard | None = None,
    cascade: CascadeConfig | None = None,
    **breaker: Any,
) -> CascadeEngine:
    breaker.setdefault("failure_threshold", 3)
    breaker.setdefault("failure_rate", 0.0)
    breaker.setdefault("cooldown_s", COOLDOWN_S)
    settings = Settings(
        tiers=TIERS,
        routing=RoutingConfig(default_strategy="heuristic", session_sticky=False),
        cascade=cascade or CascadeConfig(),
        breaker=BreakerConfig(**breaker),
    )
    board = board or BreakerBoard.from_settings(settings, clock=clock)
    return CascadeEngine(
        settings, Router(settings, None), provider, metrics=metrics, breakers=board
    )


def query(**kwargs: Any) -> CascadeQuery:
    kwargs.setdefault("judge_mode", "never")
    kwargs.setdefault("speculation", "off")
    return CascadeQuery(route=RouteQuery(text=QUESTION), **kwargs)


def hops(result: CascadeResult) -> list[tuple[str, str, str, str]]:
    return [(h.tier, h.role, h.outcome, h.error_kind) for h in result.hops]


async def open_cheap(engine: CascadeEngine) -> None:
    for _ in range(3):
        await engine.run(query(), deadline_s=None)
    assert engine.breakers.states()["cheap"] == "open"


def cheap_down_provider(extra_cheap: list[Reply] | None = None) -> ScriptedProvider:
    return ScriptedProvider(
        answers={CHEAP: [overloaded()] * 3 + (extra_cheap or []), MID: [Reply.answer("m")] * 6}
    )


async def test_repeated_529s_on_cheap_open_its_breaker() -> None:
    """Three 529s in a row on the cheap tier open its breaker; the others stay closed."""
    engine = build(cheap_down_provider(), FakeClock())
    for _ in range(3):
        result = await engine.run(query(), deadline_s=None)
        assert hops(result)[0] == ("cheap", "answer", "error", "overloaded")
        assert result.tier.name == "mid"
    assert engine.breakers.states() == {"cheap": "open", "mid": "closed", "top": "closed"}


async def test_open_tier_is_skipped_without_calling_it() -> None:
    """With cheap's breaker open the next request skips it: no call, a skipped hop, mid answers."""
    provider = cheap_down_provider()
    engine = build(provider, FakeClock())
    await open_cheap(engine)
    result = await engine.run(query(), deadline_s=None)
    assert len(provider.calls_to(CHEAP)) == 3
    assert hops(result) == [
        ("cheap", "answer", "skipped", "circuit_open"),
        ("mid", "answer", "ok", ""),
    ]
    assert result.tier.name == "mid"
    assert [r.code for r in result.escalation_reasons] == [Reason.CIRCUIT_OPEN]
    assert result.degraded_reasons == ("circuit_open:cheap",)


async def test_skipped_call_is_not_charged_to_the_attempt_budget() -> None:
    """A call the breaker refuses costs no attempt: a budget of one still reaches mid."""
    provider, clock = cheap_down_provider(), FakeClock()
    engine = build(provider, clock)
    await open_cheap(engine)
    one_attempt = CascadeConfig(max_attempts=1)
    budget_one = build(provider, clock, board=engine.breakers, cascade=one_attempt)
    result = await budget_one.run(query(), deadline_s=None)
    assert result.tier.name == "mid"


async def test_after_the_cooldown_a_trial_call_goes_through_and_success_closes() -> None:
    """Once the cool-down passes one trial call reaches cheap; its success closes the breaker."""
    clock = FakeClock()
    provider = cheap_down_provider([Reply.answer("c")])
    engine = build(provider, clock)
    await open_cheap(engine)
    clock.now += COOLDOWN_S
    assert engine.breakers.states()["cheap"] == "half_open"
    result = await engine.run(query(), deadline_s=None)
    assert hops(result) == [("cheap", "answer", "ok", "")]
    assert result.answer == "c"
    assert engine.breakers.states()["cheap"] == "closed"


async def test_failed_trial_reopens_the_breaker() -> None:
    """A trial call that fails opens the breaker again, and the request is served by mid."""
    clock = FakeClock()
    engine = build(cheap_down_provider([overloaded()]), clock)
    await open_cheap(engine)
    clock.now += COOLDOWN_S
    result = await engine.run(query(), deadline_s=None)
    assert result.tier.name == "mid"
    assert engine.breakers.states()["cheap"] == "open"


async def test_terminal_errors_do_not_count_against_the_breaker() -> None:
    """400s are the request's fault, not the tier's: five in a row leave cheap closed."""
    terminal = Reply.fail(TerminalProviderError("bad request", status_code=400))
    provider = ScriptedProvider(answers={CHEAP: [terminal] * 5, MID: [Reply.answer("m")] * 5})
    engine = build(provider, FakeClock())
    for _ in range(5):
        await engine.run(query(), deadline_s=None)
    assert engine.breakers.states()["cheap"] == "closed"


async def test_cancelled_calls_do_not_count_against_the_breaker() -> None:
    """A call cancelled because its caller left leaves the breaker closed, even at threshold 1."""
    gate = asyncio.Event()
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("c", gate=gate)]})
    engine = build(provider, FakeClock(), failure_threshold=1)
    task = asyncio.create_task(engine.run(query(), deadline_s=None))
    await provider.wait_for_calls(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.calls_to(CHEAP)[0].cancelled
    assert engine.breakers.states()["cheap"] == "closed"


async def test_open_judge_tier_is_not_asked_and_the_answer_is_not_passed() -> None:
    """With mid open, cheap's answer is not judged and not passed: mid is skipped, top answers."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("c")], TOP: [Reply.answer("t")]})
    engine = build(provider, FakeClock(), failure_threshold=1)
    permit = engine.breakers.acquire("mid")
    assert permit is not None
    permit.failure()
    result = await engine.run(query(judge_mode="always"), deadline_s=None)
    assert hops(result) == [
        ("cheap", "answer", "ok", ""),
        ("mid", "judge", "skipped", "circuit_open"),
        ("mid", "answer", "skipped", "circuit_open"),
        ("top", "answer", "ok", ""),
    ]
    assert result.hops[1].verdict == "unavailable"
    assert [r.code for r in result.escalation_reasons] == [Reason.CIRCUIT_OPEN] * 2
    assert (result.answer, result.judge_status) == ("t", "not_required")
    assert result.degraded_reasons == ("circuit_open:mid",)


def open_tier(engine: CascadeEngine, tier: str) -> None:
    permit = engine.breakers.acquire(tier)
    assert permit is not None
    permit.failure()
    assert engine.breakers.states()[tier] == "open"


async def test_open_top_tier_falls_back_to_the_answer_held() -> None:
    """Top open (fall_back): mid's unjudged answer, already held, is returned as degraded."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("m")]})
    engine = build(provider, FakeClock(), failure_threshold=1)
    open_tier(engine, "top")
    result = await engine.run(query(start_tier="mid", judge_mode="always"), deadline_s=None)
    assert (result.answer, result.tier.name, result.judge_status) == ("m", "mid", "unavailable")
    assert result.degraded
    assert result.degraded_reasons == ("circuit_open:top",)
    assert [r.code for r in result.escalation_reasons] == [Reason.CIRCUIT_OPEN] * 2


async def test_open_top_tier_with_nothing_held_falls_back_to_the_tier_below() -> None:
    """Routed to an open top tier, the request is answered by mid, unjudged and degraded."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("m")]})
    engine = build(provider, FakeClock(), failure_threshold=1)
    open_tier(engine, "top")
    result = await engine.run(query(start_tier="top"), deadline_s=None)
    assert hops(result) == [
        ("top", "answer", "skipped", "circuit_open"),
        ("mid", "answer", "ok", ""),
    ]
    assert (result.answer, result.judge_status, result.escalated) == ("m", "unavailable", False)
    assert result.degraded_reasons == ("circuit_open:top", "fell_back:mid")


async def test_fall_back_passes_over_open_tiers_below() -> None:
    """Falling back skips lower tiers whose breakers are open too."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("c")]})
    engine = build(provider, FakeClock(), failure_threshold=1)
    open_tier(engine, "top")
    open_tier(engine, "mid")
    result = await engine.run(query(start_tier="top"), deadline_s=None)
    assert (result.answer, result.tier.name) == ("c", "cheap")
    assert result.degraded_reasons == ("circuit_open:top", "circuit_open:mid", "fell_back:cheap")


async def test_every_tier_open_is_all_tiers_failed() -> None:
    """With every breaker open nothing is called and the request fails as unavailable."""
    provider = ScriptedProvider()
    engine = build(provider, FakeClock(), failure_threshold=1)
    for tier in ("cheap", "mid", "top"):
        open_tier(engine, tier)
    with pytest.raises(AllTiersFailed, match="circuit breaker"):
        await engine.run(query(), deadline_s=None)
    assert provider.calls == []


async def test_fail_policy_fails_the_request() -> None:
    """A tier whose policy is `fail` ends the request instead of letting another tier stand in."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("m")]})
    engine = build(provider, FakeClock(), failure_threshold=1, degrade=("top=fail",))
    open_tier(engine, "top")
    with pytest.raises(AllTiersFailed, match="policy is to fail"):
        await engine.run(query(start_tier="top"), deadline_s=None)
    assert provider.calls == []


async def test_breaker_state_is_published_as_a_metric() -> None:
    """The breaker gauge reads 2 (open) for cheap and 0 (closed) for the others."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    engine = build(cheap_down_provider(), FakeClock(), metrics=Metrics(meter_provider))
    await open_cheap(engine)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        str(dict(p.attributes or {})["tier"]): int(p.value)  # type: ignore[union-attr]
        for r in data.resource_metrics
        for s in r.scope_metrics
        for metric in s.metrics
        if metric.name == BREAKER_STATE
        for p in metric.data.data_points
    }
    assert points == {"cheap": 2, "mid": 0, "top": 0}
    meter_provider.shutdown()
