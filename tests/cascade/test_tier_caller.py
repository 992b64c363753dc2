"""The tier caller on its own: one call made within its breaker, budget, deadline and retries,
and the speculative call it owns, against the scripted provider with hand-moved clocks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tierroute.cascade.breaker import BreakerBoard
from tierroute.cascade.caller import TierCaller
from tierroute.cascade.limits import AttemptBudget, Deadline
from tierroute.cascade.run import RunState
from tierroute.cascade.telemetry import CascadeTelemetry
from tierroute.cascade.types import CascadeQuery
from tierroute.errors import (
    ProviderOverloaded,
    ProviderServerError,
    RateLimited,
    TerminalProviderError,
)
from tierroute.observability.names import (
    CANCEL_CALLER,
    CANCEL_NOT_NEEDED,
    CANCEL_REQUEST_ENDED,
    EVENT_CANCELLED,
)
from tierroute.providers import Message
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing import RouteQuery
from tierroute.settings import BreakerConfig, CascadeConfig, Settings, TierConfig

CHEAP, MID, TOP = "cheap-model", "mid-model", "top-model"
TIERS = (
    TierConfig("cheap", CHEAP, 1.0, 5.0),
    TierConfig("mid", MID, 3.0, 15.0),
    TierConfig("top", TOP, 15.0, 75.0),
)
CHEAP_I, MID_I, TOP_I = 0, 1, 2
QUESTION = "What is the capital of France?"
MESSAGES = [Message("user", QUESTION)]
COOLDOWN_S = 10.0


class FakeClock:
    """The request's and the breakers' clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@dataclass
class Rig:
    """A tier caller with everything it was built from, for a test to drive and read."""

    caller: TierCaller
    provider: ScriptedProvider
    board: BreakerBoard
    clock: FakeClock
    sleep: RecordingSleep
    spans: InMemorySpanExporter

    def request(self, *, deadline_s: float = 30.0, max_attempts: int = 8) -> RunState:
        return RunState(
            request_id="req-1",
            query=CascadeQuery(route=RouteQuery(text=QUESTION)),
            deadline=Deadline(self.clock, deadline_s),
            budget=AttemptBudget(max_attempts),
            started=self.clock(),
        )

    def open(self, tier: str) -> None:
        while self.board.states()[tier] != "open":
            permit = self.board.acquire(tier)
            assert permit is not None
            permit.failure()

    def cancel_reasons(self) -> list[object]:
        return [
            event.attributes["tierroute.cancel_reason"]
            for span in self.spans.get_finished_spans()
            for event in span.events
            if event.name == EVENT_CANCELLED and event.attributes is not None
        ]


def rig(provider: ScriptedProvider, *, failure_threshold: int = 3, **cascade: Any) -> Rig:
    clock = FakeClock()
    settings = Settings(
        tiers=TIERS,
        cascade=CascadeConfig(**cascade),
        breaker=BreakerConfig(
            failure_threshold=failure_threshold, failure_rate=0.0, cooldown_s=COOLDOWN_S
        ),
    )
    board = BreakerBoard.from_settings(settings, clock=clock)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = CascadeTelemetry.from_settings(settings, tracer=tracer_provider.get_tracer("test"))
    sleep = RecordingSleep()
    caller = TierCaller(
        settings, provider, breakers=board, telemetry=telemetry, sleep=sleep, clock=clock
    )
    return Rig(caller, provider, board, clock, sleep, exporter)


def hops(run: RunState, now: float) -> list[tuple[str, str, str, int]]:
    frozen = [draft.freeze(now) for draft in run.hops]
    return [(h.tier, h.outcome, h.error_kind, h.attempt) for h in frozen]


# -- retries -------------------------------------------------------------------------------


async def test_retryable_error_on_the_top_tier_is_retried_and_recorded() -> None:
    """A 500 on the top tier is retried after a back-off; both attempts are hops."""
    r = rig(
        ScriptedProvider(answers={TOP: [Reply.fail(ProviderServerError("500")), Reply.answer("t")]})
    )
    run = r.request()
    outcome = await r.caller.answer(run, TOP_I, MESSAGES)
    assert outcome.completion is not None
    assert outcome.completion.text == "t"
    assert hops(run, r.clock()) == [("top", "error", "server_error", 1), ("top", "ok", "", 2)]
    assert len(r.sleep.delays) == 1
    assert run.budget.used == 2


async def test_retries_stop_at_the_attempt_budget() -> None:
    """A retry the attempt budget cannot pay for is not sent; the outcome is a budget stop."""
    r = rig(ScriptedProvider(answers={TOP: [Reply.fail(ProviderServerError("500"))]}))
    run = r.request(max_attempts=1)
    outcome = await r.caller.answer(run, TOP_I, MESSAGES)
    assert outcome.stop == "budget"
    assert len(r.provider.calls) == 1
    assert hops(run, r.clock())[-1] == ("top", "skipped", "budget", 2)


async def test_retries_stop_at_the_per_tier_limit() -> None:
    """The top tier is tried `max_retries_per_tier` more times, then its error is returned."""
    r = rig(
        ScriptedProvider(answers={TOP: [Reply.fail(ProviderServerError("500"))] * 2}),
        max_retries_per_tier=1,
    )
    outcome = await r.caller.answer(r.request(), TOP_I, MESSAGES)
    assert outcome.error is not None
    assert outcome.error.kind == "server_error"
    assert len(r.provider.calls) == 2


async def test_a_tier_below_the_top_is_not_retried() -> None:
    """Below the top a retryable error comes straight back: a higher tier serves instead."""
    r = rig(ScriptedProvider(answers={CHEAP: [Reply.fail(ProviderOverloaded("529"))]}))
    outcome = await r.caller.answer(r.request(), CHEAP_I, MESSAGES)
    assert outcome.error is not None
    assert len(r.provider.calls) == 1
    assert r.sleep.delays == []


async def test_a_terminal_error_is_not_retried() -> None:
    """A terminal error on the top tier is returned after one call, without a back-off."""
    r = rig(ScriptedProvider(answers={TOP: [Reply.fail(TerminalProviderError("400"))]}))
    outcome = await r.caller.answer(r.request(), TOP_I, MESSAGES)
    assert outcome.error is not None
    assert len(r.provider.calls) == 1
    assert r.sleep.delays == []


async def test_a_retry_that_would_outlast_the_deadline_is_not_waited_for() -> None:
    """A retry-after longer than the time left is given up at once."""
    r = rig(ScriptedProvider(answers={TOP: [Reply.fail(RateLimited("429", retry_after=30))]}))
    outcome = await r.caller.answer(r.request(deadline_s=5.0), TOP_I, MESSAGES)
    assert outcome.error is not None
    assert r.sleep.delays == []


async def test_a_retry_waits_the_servers_retry_after() -> None:
    """A 429's retry-after is the back-off when it fits in the time left."""
    r = rig(
        ScriptedProvider(
            answers={TOP: [Reply.fail(RateLimited("429", retry_after=1.5)), Reply.answer("t")]}
        )
    )
    await r.caller.answer(r.request(deadline_s=5.0), TOP_I, MESSAGES)
    assert r.sleep.delays == [1.5]


# -- the circuit breaker --------------------------------------------------------------------


async def test_an_open_breaker_refuses_the_call_without_calling_the_provider() -> None:
    """With the tier's breaker open nothing is sent or charged; the hop is skipped."""
    r = rig(ScriptedProvider(answers={CHEAP: [Reply.answer("c")]}))
    r.open("cheap")
    run = r.request()
    outcome = await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    assert outcome.circuit_open
    assert r.provider.calls == []
    assert run.budget.used == 0
    assert hops(run, r.clock()) == [("cheap", "skipped", "circuit_open", 1)]


async def test_a_judge_refused_by_its_breaker_has_no_verdict() -> None:
    """A judge call its breaker refuses records the verdict as unavailable, never a pass."""
    r = rig(ScriptedProvider())
    r.open("mid")
    run = r.request()
    outcome = await r.caller.judge(run, MID_I, QUESTION, "Paris")
    assert outcome.circuit_open
    assert run.hops[0].verdict == "unavailable"


async def test_a_retryable_error_counts_against_the_breaker() -> None:
    """A 529 is a failure for the tier's breaker (threshold 1 here: it opens)."""
    r = rig(
        ScriptedProvider(answers={CHEAP: [Reply.fail(ProviderOverloaded("529"))]}),
        failure_threshold=1,
    )
    await r.caller.call(r.request(), CHEAP_I, "answer", MESSAGES, speculative=False)
    assert r.board.states()["cheap"] == "open"


async def test_a_terminal_error_does_not_count_against_the_breaker() -> None:
    """A terminal error is the request's fault: the breaker stays closed."""
    r = rig(
        ScriptedProvider(answers={CHEAP: [Reply.fail(TerminalProviderError("400"))]}),
        failure_threshold=1,
    )
    await r.caller.call(r.request(), CHEAP_I, "answer", MESSAGES, speculative=False)
    assert r.board.states()["cheap"] == "closed"


# -- cancellation ---------------------------------------------------------------------------


async def test_cancellation_mid_call_releases_the_permit_and_records_a_cancelled_hop() -> None:
    """A half-open tier's trial call cancelled in flight gives its trial slot back."""
    r = rig(ScriptedProvider(answers={TOP: [Reply.answer("t", gate=asyncio.Event())]}))
    r.open("top")
    r.clock.now += COOLDOWN_S
    run = r.request()
    task = asyncio.create_task(r.caller.call(run, TOP_I, "answer", MESSAGES, speculative=False))
    await r.provider.wait_for_calls(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.provider.calls[0].cancelled
    assert hops(run, r.clock()) == [("top", "cancelled", "", 1)]
    assert r.board.states()["top"] == "half_open"
    assert r.board.acquire("top") is not None  # the one trial slot is free again
    assert r.cancel_reasons() == [CANCEL_CALLER]


# -- the deadline ---------------------------------------------------------------------------


async def test_the_per_call_timeout_is_the_time_left_when_that_is_shorter() -> None:
    """Each call's timeout is the per-call timeout cut to what the deadline leaves."""
    r = rig(
        ScriptedProvider(answers={CHEAP: [Reply.answer("a"), Reply.answer("b")]}),
        per_call_timeout_s=60.0,
    )
    run = r.request(deadline_s=2.0)
    await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    r.clock.now += 1.5
    await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    assert [c.timeout_s for c in r.provider.calls] == [2.0, 0.5]


async def test_the_per_call_timeout_applies_when_the_deadline_is_further() -> None:
    """With time to spare, the call gets the configured per-call timeout."""
    r = rig(ScriptedProvider(answers={CHEAP: [Reply.answer("a")]}), per_call_timeout_s=7.0)
    await r.caller.call(r.request(deadline_s=30.0), CHEAP_I, "answer", MESSAGES, speculative=False)
    assert r.provider.calls[0].timeout_s == 7.0


async def test_a_call_after_the_deadline_is_not_made() -> None:
    """Once the deadline has passed a call is a deadline stop: nothing sent or charged."""
    r = rig(ScriptedProvider(answers={CHEAP: [Reply.answer("a")]}))
    run = r.request(deadline_s=1.0)
    r.clock.now += 1.0
    outcome = await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    assert outcome.stop == "deadline"
    assert r.provider.calls == []
    assert run.budget.used == 0
    assert hops(run, r.clock()) == [("cheap", "skipped", "deadline", 1)]


async def test_a_call_cut_by_the_deadline_is_a_deadline_stop() -> None:
    """A call outlasting the request's last moments ends as a deadline stop, not an error
    the breaker counts."""
    r = rig(
        ScriptedProvider(answers={CHEAP: [Reply.answer("a", gate=asyncio.Event())]}),
        failure_threshold=1,
    )
    run = r.request(deadline_s=0.01)
    outcome = await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    assert outcome.stop == "deadline"
    assert r.provider.calls[0].cancelled
    assert hops(run, r.clock()) == [("cheap", "error", "deadline", 1)]
    assert r.board.states()["cheap"] == "closed"


async def test_a_call_cut_by_its_own_timeout_is_a_timeout_error() -> None:
    """A call outlasting the per-call timeout, with the deadline further off, is a timeout."""
    r = rig(
        ScriptedProvider(answers={CHEAP: [Reply.answer("a", gate=asyncio.Event())]}),
        failure_threshold=1,
        per_call_timeout_s=0.01,
    )
    run = r.request(deadline_s=30.0)
    outcome = await r.caller.call(run, CHEAP_I, "answer", MESSAGES, speculative=False)
    assert outcome.stop is None
    assert outcome.error is not None
    assert outcome.error.kind == "timeout"
    assert r.board.states()["cheap"] == "open"


# -- judging --------------------------------------------------------------------------------


async def test_a_judge_reply_is_parsed_into_the_hops_verdict() -> None:
    """A judge's failing verdict comes back parsed, and its hop holds the verdict and issues."""
    r = rig(ScriptedProvider(judges={MID: [Reply.verdict(False, ["wrong city"])]}))
    run = r.request()
    outcome = await r.caller.judge(run, MID_I, QUESTION, "Lyon")
    assert outcome.verdict is not None
    assert outcome.verdict.passes is False
    (hop,) = run.hops
    assert (hop.role, hop.verdict, hop.issues) == ("judge", "fail", ("wrong city",))


# -- speculation ----------------------------------------------------------------------------


async def test_leaving_the_block_cancels_a_speculative_call_as_not_needed() -> None:
    """A speculative call still in flight when the block ends is cancelled, saying why."""
    r = rig(ScriptedProvider(answers={MID: [Reply.answer("m", gate=asyncio.Event())]}))
    run = r.request()
    async with r.caller.speculate(run, MID_I, MESSAGES):
        await r.provider.wait_for_calls(1)
    assert r.provider.calls[0].cancelled
    (hop,) = run.hops
    assert (hop.outcome, hop.speculative) == ("cancelled", True)
    assert r.cancel_reasons() == [CANCEL_NOT_NEEDED]


async def test_an_error_leaving_the_block_cancels_the_call_as_request_ended() -> None:
    """When an exception ends the block, its speculative call is cancelled with the request."""
    r = rig(ScriptedProvider(answers={MID: [Reply.answer("m", gate=asyncio.Event())]}))
    run = r.request()

    async def fail_while_speculating() -> None:
        async with r.caller.speculate(run, MID_I, MESSAGES):
            await r.provider.wait_for_calls(1)
            raise LookupError("the cascade failed")

    with pytest.raises(LookupError):
        await fail_while_speculating()
    assert r.provider.calls[0].cancelled
    assert r.cancel_reasons() == [CANCEL_REQUEST_ENDED]


async def test_a_taken_speculative_call_is_the_answer_of_its_tier() -> None:
    """Taken at its tier, the call already made is awaited as the answer, not made again."""
    r = rig(ScriptedProvider(answers={MID: [Reply.answer("m")]}))
    run = r.request()
    async with r.caller.speculate(run, MID_I, MESSAGES) as speculation:
        assert speculation.take(TOP_I) is None
        task = speculation.take(MID_I)
        assert task is not None
        assert speculation.take(MID_I) is None  # handed over once
        outcome = await r.caller.answer(run, MID_I, MESSAGES, prestarted=task)
    assert outcome.completion is not None
    assert outcome.completion.text == "m"
    assert len(r.provider.calls) == 1
    assert r.cancel_reasons() == []


async def test_no_speculative_tier_starts_no_call() -> None:
    """A block without a tier to run ahead makes no call and has nothing to hand over."""
    r = rig(ScriptedProvider())
    run = r.request()
    async with r.caller.speculate(run, None, MESSAGES) as speculation:
        # One turn of the loop: a call started by mistake would reach the provider here.
        await asyncio.sleep(0)
        assert speculation.take(MID_I) is None
    assert r.provider.calls == []
    assert run.hops == []
