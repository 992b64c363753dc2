"""The cascade engine against the scripted provider: every path, no network, no real waits."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tierroute.cascade.engine import CascadeEngine, CascadeQuery
from tierroute.errors import (
    AllTiersFailed,
    BudgetExhausted,
    DeadlineExceeded,
    InvalidRequest,
    ProviderOverloaded,
    ProviderServerError,
    RateLimited,
    TerminalProviderError,
)
from tierroute.providers import estimate_tokens, prompts
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing.policy import Reason, RiskThresholds
from tierroute.routing.router import RouteQuery, Router
from tierroute.settings import CascadeConfig, RoutingConfig, Settings, TierConfig

CHEAP, MID, TOP = "cheap-model", "mid-model", "top-model"
TIERS = (
    TierConfig("cheap", CHEAP, 1.0, 5.0),
    TierConfig("mid", MID, 3.0, 15.0),
    TierConfig("top", TOP, 15.0, 75.0),
)
# Factual and short: the heuristic routes it to the cheap tier.
QUESTION = "What is the capital of France?"


class RecordingSleep:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@dataclass
class FixedScorer:
    """A classifier double with fixed probabilities, to steer routing confidence."""

    probs: tuple[float, ...]
    version: str = "fixed-1"
    thresholds: RiskThresholds = field(default_factory=lambda: RiskThresholds((0.6, 0.3)))

    def predict_proba(self, text: str) -> list[float]:
        return list(self.probs)


def make_settings(**cascade: Any) -> Settings:
    return Settings(
        tiers=TIERS,
        cascade=CascadeConfig(**cascade),
        routing=RoutingConfig(default_strategy="heuristic", session_sticky=False),
    )


def make_engine(
    provider: ScriptedProvider,
    *,
    scorer: FixedScorer | None = None,
    sleep: RecordingSleep | None = None,
    tracer_provider: TracerProvider | None = None,
    **cascade: Any,
) -> CascadeEngine:
    settings = make_settings(**cascade)
    return CascadeEngine(
        settings,
        Router(settings, scorer),
        provider,
        sleep=sleep or RecordingSleep(),
        tracer=tracer_provider.get_tracer("test") if tracer_provider else None,
    )


def query(**kwargs: Any) -> CascadeQuery:
    route_fields = {k: kwargs.pop(k) for k in ("strategy", "request_id") if k in kwargs}
    kwargs.setdefault("judge_mode", "always")
    kwargs.setdefault("speculation", "off")
    return CascadeQuery(route=RouteQuery(text=QUESTION, **route_fields), **kwargs)


def self_block(confidence: float, needs: bool = False) -> str:
    return (
        f'Paris.\n{{"confidence": {confidence}, "needs_escalation": {str(needs).lower()}, '
        '"reason": "r"}'
    )


async def test_pass_on_cheap_tier() -> None:
    """A cheap answer the mid judge passes is returned with judge status passed."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert (result.answer, result.tier.name, result.judge_status) == ("Paris", "cheap", "passed")
    assert [(h.tier, h.role, h.outcome, h.verdict) for h in result.hops] == [
        ("cheap", "answer", "ok", None),
        ("mid", "judge", "ok", "pass"),
    ]
    assert not result.escalated
    assert not result.degraded


async def test_request_id_is_generated_when_missing() -> None:
    """A request without an id gets a generated one; a given id is kept."""
    provider = ScriptedProvider(answers={TOP: [Reply.answer("a"), Reply.answer("b")]})
    engine = make_engine(provider)
    generated = await engine.run(query(start_tier="top"), deadline_s=None)
    kept = await engine.run(query(start_tier="top", request_id="mine"), deadline_s=None)
    assert generated.request_id
    assert kept.request_id == "mine"


async def test_costs_are_priced_per_hop_and_summed() -> None:
    """Each hop is priced on its tier and the total is the sum of the hops."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris", input_tokens=1000, output_tokens=100)]},
        judges={MID: [Reply.verdict(True, input_tokens=2000, output_tokens=10)]},
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert [h.cost_usd for h in result.hops] == [
        pytest.approx(TIERS[0].cost_usd(1000, 100)),
        pytest.approx(TIERS[1].cost_usd(2000, 10)),
    ]
    assert result.total_cost_usd == pytest.approx(sum(h.cost_usd for h in result.hops))


async def test_judge_call_uses_forced_verdict_tool() -> None:
    """The judge is called with the judge system prompt, the verdict tool and its token cap."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    await make_engine(provider, judge_max_output_tokens=77).run(query(), deadline_s=None)
    (judge,) = provider.calls_to(MID, "judge")
    assert (judge.system, judge.tool, judge.max_tokens) == (
        prompts.JUDGE_SYSTEM,
        prompts.JUDGE_TOOL,
        77,
    )
    assert prompts.extract_candidate(judge.messages[-1].content) == "Paris"


async def test_escalate_once_with_failed_attempt_as_context() -> None:
    """A failed cheap answer escalates to mid, whose call carries the attempt and issues."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(False, ["wrong city"])], TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert (result.answer, result.tier.name, result.judge_status) == ("Paris", "mid", "passed")
    assert result.escalated
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_FAILED]
    sent = provider.calls_to(MID, "answer")[0].messages[-1].content
    assert "<previous_attempt>\nLyon\n</previous_attempt>" in sent
    assert "- wrong city" in sent
    assert result.hops[1].issues == ("wrong city",)


async def test_escalate_twice_to_top_tier_unjudged() -> None:
    """Two failed verdicts reach the top tier, whose answer comes back unjudged."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("a")], MID: [Reply.answer("b")], TOP: [Reply.answer("c")]},
        judges={MID: [Reply.verdict(False, ["x"])], TOP: [Reply.verdict(False, ["y", "z"])]},
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert (result.answer, result.tier.name, result.judge_status) == ("c", "top", "not_required")
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_FAILED] * 2
    assert "2 issue(s)" in result.escalation_reasons[1].detail
    assert [(h.tier, h.role) for h in result.hops] == [
        ("cheap", "answer"),
        ("mid", "judge"),
        ("mid", "answer"),
        ("top", "judge"),
        ("top", "answer"),
    ]


async def test_malformed_judge_output_escalates_as_unavailable() -> None:
    """A verdict that does not validate counts as judge unavailable and escalates."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("a")], MID: [Reply.answer("b")]},
        judges={
            MID: [Reply.raw_tool_input({"passes": "yes", "issues": []})],
            TOP: [Reply.verdict(True)],
        },
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert (result.answer, result.judge_status) == ("b", "passed")
    assert result.hops[1].verdict == "unavailable"
    assert [r.code for r in result.escalation_reasons] == [Reason.JUDGE_UNAVAILABLE]
    assert result.degraded_reasons == ("judge_unavailable:mid",)


async def test_missing_tool_call_escalates_with_plain_question() -> None:
    """A judge that calls no tool is unavailable; the next tier gets the plain question."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("a")], MID: [Reply.answer("b")]},
        judges={MID: [Reply.raw_tool_input(None, text="I refuse")], TOP: [Reply.verdict(True)]},
    )
    await make_engine(provider).run(query(), deadline_s=None)
    assert provider.calls_to(MID, "answer")[0].messages[-1].content == QUESTION


async def test_failed_judge_call_escalates_as_unavailable() -> None:
    """A judge call that errors gives no verdict: unavailable, escalate, never a pass."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("a")], MID: [Reply.answer("b")]},
        judges={MID: [Reply.fail(ProviderServerError("boom"))], TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert result.tier.name == "mid"
    assert (result.hops[1].outcome, result.hops[1].verdict) == ("error", "unavailable")
    assert result.hops[1].error_kind == "server_error"


async def test_judge_unavailable_without_higher_tier_returns_degraded() -> None:
    """When the judge gives no verdict and no higher tier serves, the answer is degraded."""
    provider = ScriptedProvider(
        answers={MID: [Reply.answer("b")], TOP: [Reply.fail(TerminalProviderError("400"))]},
        judges={TOP: [Reply.raw_tool_input({})]},
    )
    result = await make_engine(provider).run(query(start_tier="mid"), deadline_s=None)
    assert (result.answer, result.tier.name, result.judge_status) == ("b", "mid", "unavailable")
    assert result.degraded
    assert "judge_unavailable:top" in result.degraded_reasons


async def test_judge_failed_without_higher_tier_returns_failed() -> None:
    """A failed answer is returned as failed when every tier above it errors."""
    provider = ScriptedProvider(
        answers={MID: [Reply.answer("b")], TOP: [Reply.fail(TerminalProviderError("400"))]},
        judges={TOP: [Reply.verdict(False, ["bad"])]},
    )
    result = await make_engine(provider).run(query(start_tier="mid"), deadline_s=None)
    assert (result.answer, result.judge_status, result.degraded) == ("b", "failed", True)


async def test_sampled_out_answer_is_not_judged() -> None:
    """With a sample rate of 0 the cheap answer returns sampled out, with no judge call."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    engine = make_engine(provider, judge_sample_rate=0.0)
    result = await engine.run(query(judge_mode="default"), deadline_s=None)
    assert result.judge_status == "sampled_out"
    assert [h.role for h in result.hops] == ["answer"]


async def test_judge_mode_never_overrides_sampling() -> None:
    """judge_mode never returns the answer sampled out even at a sample rate of 1."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    engine = make_engine(provider, judge_sample_rate=1.0)
    result = await engine.run(query(judge_mode="never"), deadline_s=None)
    assert result.judge_status == "sampled_out"


async def test_sampling_is_deterministic_per_request_id() -> None:
    """The same request id is sampled the same way on every run."""
    outcomes = set()
    for _ in range(3):
        provider = ScriptedProvider(
            answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
        )
        engine = make_engine(provider, judge_sample_rate=0.5)
        result = await engine.run(query(judge_mode="default", request_id="r-42"), deadline_s=None)
        outcomes.add(result.judge_status)
    assert len(outcomes) == 1


async def test_speculative_call_cancelled_when_cheap_answer_passes() -> None:
    """When the cheap answer passes, the mid call in flight is cancelled; it is billed the
    prompt it was sent (a provider that read it bills it) and no output."""
    held = asyncio.Event()
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")], MID: [Reply.answer("unused", gate=held)]},
        judges={MID: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(speculation="on"), deadline_s=None)
    assert result.judge_status == "passed"
    (spec_call,) = provider.calls_to(MID, "answer")
    assert spec_call.cancelled
    spec = next(h for h in result.hops if h.speculative)
    assert (spec_call.system, spec_call.tool) == (None, None)
    read = estimate_tokens("\n".join(m.content for m in spec_call.messages))
    assert read > 0
    assert (spec.tier, spec.outcome, spec.input_tokens, spec.output_tokens) == (
        "mid",
        "cancelled",
        read,
        0,
    )
    mid = next(t for t in make_settings().tiers if t.name == "mid")
    assert spec.cost_usd == pytest.approx(mid.cost_usd(read, 0))
    assert result.total_cost_usd == pytest.approx(sum(h.cost_usd for h in result.hops))


async def test_speculative_call_used_when_cheap_answer_fails() -> None:
    """When the cheap answer fails, the mid answer already in flight is used, not re-asked."""
    release = asyncio.Event()
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris", gate=release)]},
        judges={MID: [Reply.verdict(False, ["wrong"])], TOP: [Reply.verdict(True)]},
    )
    task = asyncio.create_task(make_engine(provider).run(query(speculation="on"), deadline_s=None))
    await provider.wait_for_calls(3)  # cheap answer, speculative mid answer, mid judge
    release.set()
    result = await task
    assert (result.answer, result.tier.name, result.judge_status) == ("Paris", "mid", "passed")
    assert len(provider.calls_to(MID, "answer")) == 1
    mid_hop = next(h for h in result.hops if h.tier == "mid" and h.role == "answer")
    assert (mid_hop.speculative, mid_hop.outcome) == (True, "ok")
    # Started in parallel, it could not carry the failed attempt.
    assert provider.calls_to(MID, "answer")[0].messages[-1].content == QUESTION


async def test_low_classifier_confidence_speculates_by_default() -> None:
    """Below the speculative bound the next tier starts in parallel without being asked."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")], MID: [Reply.answer("m")]},
        judges={MID: [Reply.verdict(True)]},
    )
    engine = make_engine(provider, scorer=FixedScorer((0.5, 0.3, 0.2)))
    result = await engine.run(query(strategy="classifier", speculation="default"), deadline_s=None)
    assert result.decision is not None
    assert result.decision.confidence == 0.5
    assert any(h.speculative for h in result.hops)


async def test_high_classifier_confidence_does_not_speculate() -> None:
    """At or above the speculative bound only the routed tier is called."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    engine = make_engine(provider, scorer=FixedScorer((0.9, 0.08, 0.02)))
    result = await engine.run(query(strategy="classifier", speculation="default"), deadline_s=None)
    assert not any(h.speculative for h in result.hops)


async def test_rate_limit_on_top_tier_waits_retry_after_then_succeeds() -> None:
    """A 429 on the top tier is retried after exactly its retry-after, then answers."""
    sleep = RecordingSleep()
    provider = ScriptedProvider(
        answers={TOP: [Reply.fail(RateLimited("429", retry_after=1.5)), Reply.answer("ok")]}
    )
    result = await make_engine(provider, sleep=sleep).run(query(start_tier="top"), deadline_s=None)
    assert sleep.delays == [1.5]
    assert result.answer == "ok"
    assert [(h.outcome, h.error_kind, h.attempt) for h in result.hops] == [
        ("error", "rate_limited", 1),
        ("ok", "", 2),
    ]


async def test_retry_after_beyond_deadline_fails_fast() -> None:
    """A retry-after longer than the time left is not waited for."""
    sleep = RecordingSleep()
    provider = ScriptedProvider(answers={TOP: [Reply.fail(RateLimited("429", retry_after=30))]})
    with pytest.raises(AllTiersFailed):
        await make_engine(provider, sleep=sleep).run(query(start_tier="top"), deadline_s=5.0)
    assert sleep.delays == []


async def test_top_tier_backs_off_with_jitter_up_to_retry_limit() -> None:
    """Server errors on the top tier back off within the exponential cap, then give up."""
    sleep = RecordingSleep()
    provider = ScriptedProvider(
        answers={TOP: [Reply.fail(ProviderServerError("500")) for _ in range(3)]}
    )
    engine = make_engine(provider, sleep=sleep, max_retries_per_tier=2, retry_base_delay_s=0.2)
    with pytest.raises(AllTiersFailed) as caught:
        await engine.run(query(start_tier="top"), deadline_s=None)
    assert isinstance(caught.value.__cause__, ProviderServerError)
    assert len(provider.calls_to(TOP)) == 3
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.2
    assert 0 <= sleep.delays[1] <= 0.4


async def test_overloaded_cheap_tier_falls_over_without_backoff() -> None:
    """A 529 on the cheap tier moves to mid at once, with no back-off sleep."""
    sleep = RecordingSleep()
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.fail(ProviderOverloaded("529"))], MID: [Reply.answer("Paris")]},
        judges={TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider, sleep=sleep).run(query(), deadline_s=None)
    assert sleep.delays == []
    assert (result.answer, result.tier.name) == ("Paris", "mid")
    assert [r.code for r in result.escalation_reasons] == [Reason.PROVIDER_ERROR]
    assert result.degraded_reasons == ("provider_error:cheap:overloaded",)
    assert result.hops[0].error_kind == "overloaded"


async def test_terminal_error_on_top_tier_is_not_retried() -> None:
    """A terminal 400 is never retried and fails the request with its cause."""
    sleep = RecordingSleep()
    provider = ScriptedProvider(
        answers={TOP: [Reply.fail(TerminalProviderError("400", status_code=400))]}
    )
    with pytest.raises(AllTiersFailed) as caught:
        await make_engine(provider, sleep=sleep).run(query(start_tier="top"), deadline_s=None)
    assert isinstance(caught.value.__cause__, TerminalProviderError)
    assert len(provider.calls) == 1
    assert sleep.delays == []


async def test_terminal_error_on_cheap_tier_moves_up() -> None:
    """A terminal error below the top is not retried; the next tier answers."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.fail(TerminalProviderError("400"))], MID: [Reply.answer("m")]},
        judges={TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(), deadline_s=None)
    assert result.tier.name == "mid"
    assert len(provider.calls_to(CHEAP)) == 1


async def test_deadline_exceeded_cancels_the_call_in_flight() -> None:
    """A call that never returns ends at the deadline: DeadlineExceeded, call cancelled."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("never", gate=asyncio.Event())]})
    with pytest.raises(DeadlineExceeded):
        await make_engine(provider).run(query(), deadline_s=0.05)
    assert provider.calls[0].cancelled


async def test_deadline_after_an_answer_returns_it_degraded() -> None:
    """When time runs out after a failed answer, that answer comes back marked degraded."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("x", gate=asyncio.Event())]},
        judges={MID: [Reply.verdict(False, ["wrong"])]},
    )
    result = await make_engine(provider).run(query(), deadline_s=0.05)
    assert (result.answer, result.judge_status) == ("Lyon", "failed")
    assert "deadline" in result.degraded_reasons
    assert result.hops[-1].error_kind == "deadline"


async def test_every_call_gets_the_remaining_time_as_timeout() -> None:
    """Provider calls are given the per-call timeout capped by the request's deadline."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    await make_engine(provider, per_call_timeout_s=60.0).run(query(), deadline_s=2.0)
    assert all(0 < c.timeout_s <= 2.0 for c in provider.calls)


async def test_deadline_is_capped_by_configuration() -> None:
    """A caller's deadline longer than the configured maximum is cut to it."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    engine = make_engine(provider, max_deadline_s=3.0, per_call_timeout_s=600.0)
    await engine.run(query(), deadline_s=1000.0)
    assert all(c.timeout_s <= 3.0 for c in provider.calls)


async def test_client_cancellation_cancels_every_call_in_flight() -> None:
    """Cancelling the request cancels the primary and the speculative call alike."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.answer("a", gate=asyncio.Event())],
            MID: [Reply.answer("b", gate=asyncio.Event())],
        }
    )
    task = asyncio.create_task(make_engine(provider).run(query(speculation="on"), deadline_s=None))
    await provider.wait_for_calls(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [c.outcome for c in provider.calls] == ["cancelled", "cancelled"]


async def test_attempt_budget_exhausted_without_answer() -> None:
    """When the attempt budget is spent before any answer, BudgetExhausted is raised."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.fail(ProviderOverloaded("529"))],
            MID: [Reply.fail(ProviderOverloaded("529"))],
        }
    )
    with pytest.raises(BudgetExhausted):
        await make_engine(provider, max_attempts=2).run(query(), deadline_s=None)
    assert len(provider.calls) == 2


async def test_attempt_budget_is_shared_with_judges_and_retries() -> None:
    """Judge calls draw on the same budget; a spent budget returns the answer at hand."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")]}, judges={MID: [Reply.verdict(False, ["x"])]}
    )
    result = await make_engine(provider, max_attempts=2).run(query(), deadline_s=None)
    assert (result.answer, result.judge_status) == ("Lyon", "failed")
    assert result.hops[-1].outcome == "skipped"
    assert result.hops[-1].error_kind == "budget"
    assert "budget" in result.degraded_reasons


async def test_self_routing_accepts_confident_answer() -> None:
    """A confident self-assessment is accepted without a judge, the block stripped."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer(self_block(0.9))]})
    result = await make_engine(provider).run(query(self_routing=True), deadline_s=None)
    assert (result.answer, result.judge_status) == ("Paris.", "self_accepted")
    assert result.decision is None
    assert prompts.SELF_ROUTING_INSTRUCTION in provider.calls[0].messages[-1].content


async def test_self_routing_escalates_on_low_confidence() -> None:
    """Stated confidence below the threshold escalates to the judged path."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(self_block(0.5))], MID: [Reply.answer("Paris")]},
        judges={TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(self_routing=True), deadline_s=None)
    assert (result.tier.name, result.judge_status) == ("mid", "passed")
    assert [r.code for r in result.escalation_reasons] == [Reason.SELF_LOW_CONFIDENCE]


async def test_self_routing_escalates_when_model_asks() -> None:
    """needs_escalation true escalates even with high stated confidence."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(self_block(0.95, needs=True))], MID: [Reply.answer("P")]},
        judges={TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(self_routing=True), deadline_s=None)
    assert result.tier.name == "mid"


async def test_self_routing_escalates_on_unparseable_block() -> None:
    """A missing confidence block escalates rather than assuming confidence."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris, I think")], MID: [Reply.answer("Paris")]},
        judges={TOP: [Reply.verdict(True)]},
    )
    result = await make_engine(provider).run(query(self_routing=True), deadline_s=None)
    assert result.tier.name == "mid"
    assert "unparseable" in result.escalation_reasons[0].detail


async def test_self_routing_with_higher_start_tier_is_invalid() -> None:
    """Self-routing cannot start anywhere but the cheapest tier."""
    with pytest.raises(InvalidRequest):
        await make_engine(ScriptedProvider()).run(
            query(self_routing=True, start_tier="mid"), deadline_s=None
        )


async def test_unknown_start_tier_is_invalid() -> None:
    """A start tier that is not configured is rejected before any call."""
    provider = ScriptedProvider()
    with pytest.raises(InvalidRequest):
        await make_engine(provider).run(query(start_tier="huge"), deadline_s=None)
    assert provider.calls == []


async def test_top_tier_answer_is_not_judged() -> None:
    """Starting on the top tier makes one call and reports the judge as not required."""
    provider = ScriptedProvider(answers={TOP: [Reply.answer("ok")]})
    result = await make_engine(provider).run(query(start_tier="top"), deadline_s=None)
    assert result.judge_status == "not_required"
    assert len(provider.calls) == 1


async def test_start_tier_override_is_a_recorded_reason() -> None:
    """An override shows as TIER_OVERRIDE on the decision and sets the start tier."""
    provider = ScriptedProvider(answers={TOP: [Reply.answer("ok")]})
    result = await make_engine(provider).run(query(start_tier="top"), deadline_s=None)
    assert result.decision is not None
    assert result.decision.reasons[-1].code == Reason.TIER_OVERRIDE
    assert result.start_tier_index == 2
    assert not result.escalated


async def test_request_output_tokens_bounded_by_the_tiers_limit() -> None:
    """A request's max_output_tokens applies to answers, capped by each tier's own limit."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("ok")], TOP: [Reply.answer("ok")]})
    tiers = (dataclasses.replace(TIERS[0], max_output_tokens=500), *TIERS[1:])
    settings = dataclasses.replace(make_settings(judge_sample_rate=0.0), tiers=tiers)
    engine = CascadeEngine(settings, Router(settings, None), provider)
    await engine.run(query(start_tier="top", max_output_tokens=6000), deadline_s=None)
    await engine.run(
        query(start_tier="cheap", max_output_tokens=6000, judge_mode="never"), deadline_s=None
    )
    assert [c.max_tokens for c in provider.calls] == [6000, 500]


async def test_headers_are_sent_with_every_call() -> None:
    """The request's headers accompany answer and judge calls alike."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    await make_engine(provider).run(query(headers={"x-test": "1"}), deadline_s=None)
    assert [c.headers for c in provider.calls] == [{"x-test": "1"}] * 2


async def test_spans_carry_genai_attributes_and_no_text() -> None:
    """Routing, answer and judge spans are emitted with GenAI attributes and no query text."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris", input_tokens=12, output_tokens=3)]},
        judges={MID: [Reply.verdict(True)]},
    )
    await make_engine(provider, tracer_provider=tracer_provider).run(query(), deadline_s=None)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"tierroute.route", "tierroute.answer", "tierroute.judge"}
    answer = dict(spans["tierroute.answer"].attributes or {})
    assert answer["gen_ai.request.model"] == CHEAP
    assert (answer["gen_ai.usage.input_tokens"], answer["gen_ai.usage.output_tokens"]) == (12, 3)
    assert dict(spans["tierroute.judge"].attributes or {})["tierroute.verdict"] == "pass"
    every_value = " ".join(
        str(v) for s in spans.values() for v in dict(s.attributes or {}).values()
    )
    assert "Paris" not in every_value
    assert "France" not in every_value
    tracer_provider.shutdown()
