"""The cascade engine: answer on a tier, have the tier above judge it, escalate with context.

Transport-free: the gRPC servicer converts protobuf to `CascadeQuery` and `CascadeResult`
back, and maps the errors `CascadeEngine.run` raises to status codes:

- `InvalidRequest`: an unknown start tier, or self-routing with a start tier other than the
  cheapest; routing errors pass through unchanged.
- `DeadlineExceeded`: the request's deadline passed before any answer existed.
- `BudgetExhausted`: the attempt budget was spent before any answer existed.
- `AllTiersFailed`: every tier that could answer failed (`__cause__` is the last error).
- `asyncio.CancelledError`: the caller went away; every provider call in flight is cancelled
  before it propagates.

When an answer exists but nothing better can be had (the tiers above failed, or the deadline
or budget ran out), that answer is returned with `degraded=True` rather than an error. See
docs/cascade.md for the whole set of rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from tierroute.cascade.breaker import CIRCUIT_OPEN, BreakerBoard, Permit
from tierroute.cascade.calibrated import apply_cascade, cascade_overrides
from tierroute.cascade.limits import AttemptBudget, Deadline, retry_delay
from tierroute.cascade.sampling import JudgeSampler, parse_rates
from tierroute.errors import (
    AllTiersFailed,
    BudgetExhausted,
    ConfigError,
    DeadlineExceeded,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
)
from tierroute.observability import Metrics
from tierroute.observability.names import (
    ATTR_ATTEMPT,
    ATTR_CANCEL_REASON,
    ATTR_COST_USD,
    ATTR_DEGRADED,
    ATTR_DEGRADED_REASONS,
    ATTR_DETAIL,
    ATTR_ERROR_KIND,
    ATTR_ESCALATED,
    ATTR_FROM_TIER,
    ATTR_HOPS,
    ATTR_JUDGE_ISSUES,
    ATTR_JUDGE_PARSE_FAILED,
    ATTR_JUDGE_STATUS,
    ATTR_OUTCOME,
    ATTR_REASON,
    ATTR_REQUEST_ID,
    ATTR_RETRY_CAUSE,
    ATTR_RETRY_DELAY_S,
    ATTR_ROLE,
    ATTR_SPECULATIVE,
    ATTR_START_TIER,
    ATTR_STRATEGY,
    ATTR_TIER,
    ATTR_TO_TIER,
    ATTR_TOTAL_COST_USD,
    ATTR_VERDICT,
    CANCEL_CALLER,
    CANCEL_NOT_NEEDED,
    CANCEL_REQUEST_ENDED,
    EVENT_CANCELLED,
    EVENT_CONTENT,
    EVENT_ESCALATION,
    EVENT_RETRY,
    EVENT_RETRY_ABANDONED,
    SPAN_ANSWER,
    SPAN_JUDGE,
    SPAN_ROUTE,
)
from tierroute.providers import Completion, Message, Provider, prompts
from tierroute.routing import (
    PLAN_DROPPED,
    Decision,
    Reason,
    ReasonNote,
    RouteQuery,
    Router,
    annotate_route,
    query_type,
)
from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)

HopRole = Literal["answer", "judge"]
HopOutcome = Literal["ok", "error", "cancelled", "skipped"]
VerdictValue = Literal["pass", "fail", "unavailable"]
JudgeStatus = Literal[
    "passed", "not_required", "sampled_out", "unavailable", "failed", "self_accepted", "skipped"
]
SpeculationMode = Literal["default", "on", "off"]
JudgeMode = Literal["default", "always", "never", "start_only"]
JUDGE_MODES: tuple[JudgeMode, ...] = ("default", "always", "never", "start_only")


@dataclass(frozen=True)
class CascadeQuery:
    """One Cascade request, already validated against the input limits."""

    route: RouteQuery
    start_tier: str | None = None
    self_routing: bool = False
    max_output_tokens: int | None = None
    speculation: SpeculationMode = "default"
    judge_mode: JudgeMode = "default"
    # The caller's system instruction (ROLE_SYSTEM messages), sent with every answer call.
    system: str = ""
    # Sent with every provider call of the request (the replay backend's fault injection).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HopRecord:
    """One provider call of a cascade and how it ended; never holds prompt or answer text."""

    tier: str
    model: str
    role: HopRole
    outcome: HopOutcome
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    verdict: VerdictValue | None = None
    issues: tuple[str, ...] = ()
    attempt: int = 1
    speculative: bool = False
    error_kind: str = ""
    stop_reason: str = ""


@dataclass(frozen=True)
class CascadeResult:
    """The answer, the tier that produced it, and every hop that led there."""

    request_id: str
    answer: str
    tier: TierConfig
    tier_index: int
    start_tier_index: int
    hops: tuple[HopRecord, ...]
    total_cost_usd: float
    total_latency_ms: float
    escalated: bool
    escalation_reasons: tuple[ReasonNote, ...]
    judge_status: JudgeStatus
    degraded: bool
    degraded_reasons: tuple[str, ...]
    decision: Decision | None


@dataclass
class _HopDraft:
    """A hop while its call is in flight; it reads as cancelled until the call ends."""

    tier: TierConfig
    role: HopRole
    attempt: int
    speculative: bool
    started: float
    outcome: HopOutcome = "cancelled"
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float | None = None
    verdict: VerdictValue | None = None
    issues: tuple[str, ...] = ()
    error_kind: str = ""
    stop_reason: str = ""

    def freeze(self, now: float) -> HopRecord:
        latency = self.latency_s if self.latency_s is not None else now - self.started
        return HopRecord(
            tier=self.tier.name,
            model=self.model or self.tier.model,
            role=self.role,
            outcome=self.outcome,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.tier.cost_usd(self.input_tokens, self.output_tokens),
            latency_ms=latency * 1000.0,
            verdict=self.verdict,
            issues=self.issues,
            attempt=self.attempt,
            speculative=self.speculative,
            error_kind=self.error_kind,
            stop_reason=self.stop_reason,
        )


@dataclass(frozen=True)
class _Outcome:
    """How one call ended: a completion, a provider error, or a stop (deadline, budget)."""

    completion: Completion | None = None
    error: ProviderError | None = None
    stop: Literal["deadline", "budget"] | None = None
    verdict: prompts.Verdict | None = None
    # The tier's circuit breaker refused the call: nothing was sent.
    circuit_open: bool = False


@dataclass(frozen=True)
class _ModelCascade:
    """The cascade settings a model's calibration decides: judge sampling, speculation."""

    sampler: JudgeSampler
    speculative_bound: float


_PER_MODEL_CACHE = 4


@dataclass(frozen=True)
class _Judging:
    """Which answers of one request are judged, and what an unjudged one is called.

    `start` covers the start tier's answer, `escalated` every answer after an escalation.
    An answer left unjudged by the sampler (or JUDGE_MODE_NEVER) is `sampled_out`; one left
    unjudged by the request's or the value policy's choice is `skipped`.
    """

    start: bool
    escalated: bool
    unjudged: JudgeStatus

    def judges(self, index: int, start_index: int) -> bool:
        """Whether the answer of tier `index` is judged."""
        return self.start if index == start_index else self.escalated


# The value policy's judge plans (`tierroute.value.JudgePlan`) as judging decisions.
_PLAN_JUDGING: dict[str, _Judging] = {
    "none": _Judging(False, False, "skipped"),
    "all": _Judging(True, True, "skipped"),
    "start_only": _Judging(True, False, "skipped"),
}


@dataclass
class _Candidate:
    """An answer held in reserve in case nothing better arrives."""

    text: str
    tier_index: int
    status: JudgeStatus


@dataclass
class _Run:
    """Everything one request shares: its limits, its hops and what it has learned."""

    request_id: str
    query: CascadeQuery
    deadline: Deadline
    budget: AttemptBudget
    started: float
    hops: list[_HopDraft] = field(default_factory=list)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    reasons: list[ReasonNote] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    tasks: set[asyncio.Task[_Outcome]] = field(default_factory=set)

    def next_attempt(self, tier: str, role: str) -> int:
        n = self.attempts.get((tier, role), 0) + 1
        self.attempts[(tier, role)] = n
        return n


class _Telemetry:
    """The cascade's spans, events and metrics, in one place.

    Spans: routing, each answer call, each judge call; all are children of the span current
    when `run` is called (the gRPC server span when served), which is the request span.
    Escalations and retries are events on that request span, and its attributes sum the
    request up when it ends. A cancelled call's span ends with outcome `cancelled` and a
    `tierroute.cancelled` event saying why. Spans carry GenAI semantic-convention attributes
    and tierroute's own, never prompt or answer text: with `capture_content` (an explicit
    opt-in) that text is added as a GenAI content event.
    """

    def __init__(
        self,
        tracer: trace.Tracer | None,
        provider_name: str,
        metrics: Metrics,
        tier_names: tuple[str, ...],
        *,
        capture_content: bool,
    ) -> None:
        self._tracer = tracer if tracer is not None else trace.NoOpTracer()
        self._provider_name = provider_name
        self._metrics = metrics
        self._tier_names = tier_names
        self._capture = capture_content

    @contextlib.contextmanager
    def route_span(self) -> Iterator[trace.Span]:
        with self._tracer.start_as_current_span(SPAN_ROUTE) as span:
            yield span

    def routed(self, span: trace.Span, decision: Decision) -> None:
        annotate_route(span, decision, self._tier_names)
        self._metrics.decision(
            rpc="cascade",
            strategy=decision.strategy,
            tier=decision.tier.name,
            seconds=decision.decision_time_us / 1e6,
        )
        if decision.plan is not None:
            self._metrics.cascade_plan(action=decision.plan.action.name(self._tier_names))

    @contextlib.contextmanager
    def call_span(self, draft: _HopDraft) -> Iterator[trace.Span]:
        name = SPAN_JUDGE if draft.role == "judge" else SPAN_ANSWER
        attributes: dict[str, str | int | bool] = {
            gen_ai.GEN_AI_OPERATION_NAME: "chat",
            gen_ai.GEN_AI_SYSTEM: self._provider_name,
            gen_ai.GEN_AI_PROVIDER_NAME: self._provider_name,
            gen_ai.GEN_AI_REQUEST_MODEL: draft.tier.model,
            ATTR_TIER: draft.tier.name,
            ATTR_ROLE: draft.role,
            ATTR_ATTEMPT: draft.attempt,
            ATTR_SPECULATIVE: draft.speculative,
        }
        # Cancellation is an expected outcome here (speculation, client gone), not an error.
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            unexpected = ""
            try:
                yield span
            except asyncio.CancelledError as exc:
                # The engine cancels with a reason as the message; none means the caller left.
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
                span.add_event(
                    EVENT_CANCELLED,
                    {
                        ATTR_CANCEL_REASON: reason or CANCEL_CALLER,
                        ATTR_SPECULATIVE: draft.speculative,
                    },
                )
                raise
            except Exception as exc:
                # Not a provider error (those are outcomes): a bug, shown as one.
                unexpected = type(exc).__qualname__
                raise
            finally:
                self._finished(span, draft)
                if unexpected:
                    span.set_attribute(ATTR_OUTCOME, "error")
                    span.set_attribute(ERROR_TYPE, unexpected)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, unexpected))

    def _finished(self, span: trace.Span, draft: _HopDraft) -> None:
        tier, role = draft.tier.name, draft.role
        cost = draft.tier.cost_usd(draft.input_tokens, draft.output_tokens)
        span.set_attribute(ATTR_OUTCOME, draft.outcome)
        span.set_attribute(ATTR_COST_USD, cost)
        if draft.outcome == "ok":
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, draft.model or draft.tier.model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, draft.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, draft.output_tokens)
            if draft.stop_reason:
                span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [draft.stop_reason])
        if draft.error_kind:
            span.set_attribute(ATTR_ERROR_KIND, draft.error_kind)
            span.set_attribute(ERROR_TYPE, draft.error_kind)
            span.set_status(trace.Status(trace.StatusCode.ERROR, draft.error_kind))
            self._metrics.provider_error(tier=tier, role=role, kind=draft.error_kind)
        if draft.verdict is not None:
            span.set_attribute(ATTR_VERDICT, draft.verdict)
            span.set_attribute(ATTR_JUDGE_ISSUES, len(draft.issues))
            self._metrics.judge_verdict(tier=tier, verdict=draft.verdict)
            if draft.outcome == "ok" and draft.verdict == "unavailable":
                span.set_attribute(ATTR_JUDGE_PARSE_FAILED, True)
                self._metrics.judge_parse_failure(tier=tier)
        self._metrics.cost(tier=tier, role=role, usd=cost)
        if draft.outcome in ("ok", "error") and draft.latency_s is not None:
            self._metrics.provider_call(
                model=draft.tier.model,
                tier=tier,
                role=role,
                seconds=draft.latency_s,
                input_tokens=draft.input_tokens,
                output_tokens=draft.output_tokens,
                error_kind=draft.error_kind,
            )

    def completed(
        self,
        span: trace.Span,
        messages: list[Message],
        system: str | None,
        completion: Completion,
    ) -> None:
        """Opt-in only: the call's prompt and answer as a GenAI content event."""
        if not self._capture or not span.is_recording():
            return
        parts: list[dict[str, object]] = []
        if completion.text:
            parts.append({"type": "text", "content": completion.text})
        if completion.tool_input is not None:
            parts.append(
                {
                    "type": "tool_call",
                    "name": prompts.JUDGE_TOOL.name,
                    "arguments": dict(completion.tool_input),
                }
            )
        content = {
            gen_ai.GEN_AI_INPUT_MESSAGES: json.dumps(
                [
                    {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
                    for m in messages
                ]
            ),
            gen_ai.GEN_AI_OUTPUT_MESSAGES: json.dumps(
                [{"role": "assistant", "parts": parts, "finish_reason": completion.stop_reason}]
            ),
        }
        if system:
            content[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS] = json.dumps(
                [{"type": "text", "content": system}]
            )
        span.add_event(EVENT_CONTENT, content)

    def escalated(self, note: ReasonNote, from_tier: str, to_tier: str) -> None:
        # ReasonNote details never hold query text, so they may go on the span.
        trace.get_current_span().add_event(
            EVENT_ESCALATION,
            {
                ATTR_REASON: note.code.value,
                ATTR_DETAIL: note.detail,
                ATTR_FROM_TIER: from_tier,
                ATTR_TO_TIER: to_tier,
            },
        )
        self._metrics.escalation(reason=note.code.value, from_tier=from_tier)

    def retry(self, tier: str, retry: int, cause: str, delay_s: float) -> None:
        trace.get_current_span().add_event(
            EVENT_RETRY,
            {
                ATTR_TIER: tier,
                ATTR_ATTEMPT: retry + 1,
                ATTR_RETRY_CAUSE: cause,
                ATTR_RETRY_DELAY_S: delay_s,
            },
        )

    def retry_abandoned(self, tier: str, cause: str, delay_s: float) -> None:
        trace.get_current_span().add_event(
            EVENT_RETRY_ABANDONED,
            {
                ATTR_TIER: tier,
                ATTR_RETRY_CAUSE: cause,
                ATTR_RETRY_DELAY_S: delay_s,
                ATTR_REASON: "deadline",
            },
        )

    def finished(self, result: CascadeResult, strategy: str) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    ATTR_REQUEST_ID: result.request_id,
                    ATTR_STRATEGY: strategy,
                    ATTR_TIER: result.tier.name,
                    ATTR_START_TIER: self._tier_names[result.start_tier_index],
                    ATTR_JUDGE_STATUS: result.judge_status,
                    ATTR_ESCALATED: result.escalated,
                    ATTR_DEGRADED: result.degraded,
                    ATTR_DEGRADED_REASONS: list(result.degraded_reasons),
                    ATTR_TOTAL_COST_USD: result.total_cost_usd,
                    ATTR_HOPS: len(result.hops),
                }
            )
        self._metrics.request(
            rpc="cascade",
            tier=result.tier.name,
            strategy=strategy,
            outcome="degraded" if result.degraded else "ok",
        )

    def failed(self, request_id: str, strategy: str, error: BaseException) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({ATTR_REQUEST_ID: request_id, ATTR_STRATEGY: strategy})
        outcome = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
        self._metrics.request(rpc="cascade", tier="none", strategy=strategy, outcome=outcome)


class CascadeEngine:
    """Runs cascades over the configured tiers with one provider."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        provider: Provider,
        *,
        rng_seed: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        tracer: trace.Tracer | None = None,
        provider_name: str = "anthropic",
        metrics: Metrics | None = None,
        breakers: BreakerBoard | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.cascade
        self._tiers = settings.tiers
        self._top = len(settings.tiers) - 1
        self._router = router
        self._provider = provider
        self._rng = random.Random(rng_seed)
        self._sleep = sleep
        self._clock = clock
        self._telemetry = _Telemetry(
            tracer,
            provider_name,
            metrics if metrics is not None else Metrics(provider_name=provider_name),
            tuple(t.name for t in settings.tiers),
            capture_content=settings.telemetry.capture_content,
        )
        # Judge sampling and the speculative bound per loaded model: a bundle's calibrated
        # `cascade` section applies to the calls that model routes, hot reloads included.
        # Keyed by the calibration document itself (held here, so compared by identity): a
        # bundle recalibrated in place and reloaded under the same version is a new document.
        self._per_model: list[tuple[object, _ModelCascade]] = []
        self._breakers = (
            breakers if breakers is not None else BreakerBoard.from_settings(settings, clock=clock)
        )
        if metrics is not None:
            self._breakers.subscribe(metrics.set_breaker_state)

    @property
    def breakers(self) -> BreakerBoard:
        """The per-tier circuit breakers consulted before every provider call."""
        return self._breakers

    @property
    def sampler(self) -> JudgeSampler:
        """The judge sampler of the model now serving (for reports of the rates in use)."""
        return self._model_cascade().sampler

    def _model_cascade(self) -> _ModelCascade:
        """Judge sampling and speculative bound for the router's current model.

        The configured `cascade` settings, with the model bundle's calibrated `cascade`
        section applied over them unless `cascade.use_model_calibration = false`. Built once
        per loaded model; a section that does not validate is logged and ignored (the
        configured values serve), never an error on the request path.
        """
        scorer = self._router.scorer
        document = getattr(scorer, "calibration", None) if scorer is not None else None
        if not self._config.use_model_calibration or not isinstance(document, Mapping):
            document = None
        for known, cached in self._per_model:
            if known is document:
                return cached
        key = str(getattr(scorer, "version", ""))
        config = self._config
        if document is not None:
            try:
                config = apply_cascade(self._config, document)
            except ConfigError as exc:
                logger.warning("model %s: cascade calibration ignored: %s", key, exc)
            else:
                if config != self._config:
                    logger.info(
                        "model %s: cascade settings from its calibration: %s",
                        key,
                        cascade_overrides(document),
                    )
        found = _ModelCascade(
            JudgeSampler(config.judge_sample_rate, parse_rates(config.judge_sample_rates)),
            config.speculative_bound,
        )
        # Reloads are rare; the current and previous models are what calls ask for.
        self._per_model = [*self._per_model[-(_PER_MODEL_CACHE - 1) :], (document, found)]
        return found

    async def run(self, query: CascadeQuery, *, deadline_s: float | None) -> CascadeResult:
        """Answer `query` within `deadline_s` seconds (None: the configured default)."""
        config = self._config
        started = self._clock()
        seconds = config.default_deadline_s if deadline_s is None else deadline_s
        deadline = Deadline(self._clock, min(seconds, config.max_deadline_s))
        start_index, decision = self._start(query)
        strategy = decision.strategy if decision is not None else "self_routing"
        run = _Run(
            request_id=query.route.request_id or uuid.uuid4().hex,
            query=query,
            deadline=deadline,
            budget=AttemptBudget(config.max_attempts),
            started=started,
        )
        try:
            result = await self._cascade(run, start_index, decision)
        except BaseException as exc:
            self._telemetry.failed(run.request_id, strategy, exc)
            raise
        finally:
            # No provider call outlives its request, whichever way the request ended.
            await self._cancel_all(run)
        self._telemetry.finished(result, strategy)
        logger.info(
            "cascade %s: tier=%s start=%s judge=%s escalations=%d hops=%d cost_usd=%.6f "
            "degraded=%s",
            result.request_id,
            result.tier.name,
            self._tiers[result.start_tier_index].name,
            result.judge_status,
            len(result.escalation_reasons),
            len(result.hops),
            result.total_cost_usd,
            ",".join(result.degraded_reasons) or "no",
        )
        return result

    # -- the start tier ------------------------------------------------------------------

    def _start(self, query: CascadeQuery) -> tuple[int, Decision | None]:
        if query.speculation not in ("default", "on", "off"):
            raise InvalidRequest(f"speculation mode {query.speculation!r} is unknown")
        if query.judge_mode not in JUDGE_MODES:
            raise InvalidRequest(f"judge mode {query.judge_mode!r} is unknown")
        if query.max_output_tokens is not None and query.max_output_tokens < 0:
            raise InvalidRequest("max_output_tokens must not be negative")
        override: int | None = None
        if query.start_tier:
            try:
                override = self._settings.tier_index(query.start_tier)
            except ConfigError as exc:
                raise InvalidRequest(
                    f"start tier {query.start_tier!r} is not configured; "
                    f"use one of {[t.name for t in self._tiers]}"
                ) from exc
        if query.self_routing:
            if override not in (None, 0):
                raise InvalidRequest(
                    "self-routing starts on the cheapest tier; "
                    f"start tier {query.start_tier!r} contradicts it"
                )
            return 0, None
        with self._telemetry.route_span() as span:
            # `decide`, not `route`: this span is the request's one route span. The cascade
            # thresholds assume a judge may check the answer; a request that turns judging
            # off starts where Route would, with nothing behind the start tier.
            decision = self._router.decide(query.route, for_cascade=query.judge_mode != "never")
            if override is not None:
                # The value policy's plan holds for the start tier it chose, and no other.
                dropped = decision.plan is not None and override != decision.tier_index
                note = ReasonNote(
                    Reason.TIER_OVERRIDE,
                    f"caller chose {self._tiers[override].name} over {decision.tier.name}"
                    + (PLAN_DROPPED if dropped else ""),
                )
                decision = dataclasses.replace(
                    decision,
                    tier_index=override,
                    tier=self._tiers[override],
                    reasons=(*decision.reasons, note),
                    plan=None if dropped else decision.plan,
                )
            self._telemetry.routed(span, decision)
        return decision.tier_index, decision

    @staticmethod
    def _speculate(
        query: CascadeQuery, decision: Decision | None, judged: bool, bound: float
    ) -> bool:
        if query.speculation == "off":
            return False
        if query.speculation == "on":
            return True
        # Speculation only pays when the cheap answer will be judged and may well fail.
        return decision is not None and judged and decision.confidence < bound

    # -- the cascade ---------------------------------------------------------------------

    async def _cascade(
        self, run: _Run, start_index: int, decision: Decision | None
    ) -> CascadeResult:
        query = run.query
        question = query.route.text
        history = list(query.route.history)
        plain = [*history, Message("user", question)]
        model = self._model_cascade()
        judging = self._judging(run, decision, model.sampler)
        self_routing = query.self_routing
        index = start_index
        messages = prompts.self_routing_messages(question, history) if self_routing else plain
        fallback: _Candidate | None = None
        speculative: asyncio.Task[_Outcome] | None = None
        if index < self._top and self._speculate(
            query, decision, judging.start, model.speculative_bound
        ):
            speculative = self._launch(run, index + 1, plain)

        def finish(answer: str, at: int, status: JudgeStatus) -> CascadeResult:
            return self._result(
                run,
                answer=answer,
                index=at,
                start_index=start_index,
                status=status,
                decision=decision,
            )

        while True:
            prestarted = None
            if speculative is not None and index == start_index + 1:
                prestarted, speculative = speculative, None
            outcome = await self._answer(run, index, messages, prestarted)
            if outcome.stop is not None:
                await self._cancel(speculative)
                return self._stopped(run, outcome.stop, fallback, start_index, decision)
            if outcome.circuit_open:
                # The tier's degradation policy decides (docs/RELIABILITY.md).
                tier_name = self._tiers[index].name
                _degrade(run, f"{CIRCUIT_OPEN}:{tier_name}")
                action = self._breakers.action(tier_name)
                if action == "skip_to_next" and index < self._top:
                    note = ReasonNote(Reason.CIRCUIT_OPEN, f"{tier_name} circuit breaker is open")
                    self._escalate(run, note, index)
                    if self_routing:
                        self_routing, messages = False, plain
                    index += 1
                    continue
                await self._cancel(speculative)
                if action == "fail":
                    raise AllTiersFailed(
                        f"the {tier_name} tier's circuit breaker is open and its degradation "
                        "policy is to fail"
                    )
                return await self._fall_back(
                    run, index, fallback, plain=plain, start_index=start_index, decision=decision
                )
            if outcome.completion is None:
                error = outcome.error
                assert error is not None  # an outcome is a completion, an error or a stop
                if index == self._top:
                    await self._cancel(speculative)
                    if fallback is not None:
                        run.degraded.append(f"tier_unavailable:{self._tiers[index].name}")
                        return finish(fallback.text, fallback.tier_index, fallback.status)
                    raise AllTiersFailed(
                        f"no tier could answer; {self._tiers[index].name} failed with {error.kind}"
                    ) from error
                tier_name = self._tiers[index].name
                self._escalate(
                    run,
                    ReasonNote(Reason.PROVIDER_ERROR, f"{tier_name} failed with {error.kind}"),
                    index,
                )
                run.degraded.append(f"provider_error:{tier_name}:{error.kind}")
                if self_routing:
                    self_routing, messages = False, plain
                index += 1
                continue
            completion = outcome.completion
            if self_routing:
                answer, assessment = prompts.parse_self_assessment(completion.text)
                confidence = assessment.confidence
                if (
                    confidence is not None
                    and assessment.needs_escalation is False
                    and confidence >= self._config.self_confidence_threshold
                ):
                    await self._cancel(speculative)
                    return finish(answer, index, "self_accepted")
                if confidence is None:
                    detail = "confidence block missing or unparseable"
                    fallback = _Candidate(answer, index, "unavailable")
                else:
                    detail = (
                        f"stated confidence {confidence:.2f}, "
                        f"needs_escalation={assessment.needs_escalation}"
                    )
                    fallback = _Candidate(answer, index, "failed")
                self._escalate(run, ReasonNote(Reason.SELF_LOW_CONFIDENCE, detail), index)
                self_routing, messages = False, plain
                index += 1
                continue
            answer = completion.text
            if index == self._top:
                await self._cancel(speculative)
                return finish(answer, index, "not_required")
            if not judging.judges(index, start_index):
                await self._cancel(speculative)
                return finish(answer, index, judging.unjudged)
            judge_index = index + 1
            judge_name = self._tiers[judge_index].name
            verdict_outcome = await self._judge(run, judge_index, question, answer)
            if verdict_outcome.stop is not None:
                await self._cancel(speculative)
                fallback = _Candidate(answer, index, "unavailable")
                return self._stopped(run, verdict_outcome.stop, fallback, start_index, decision)
            if verdict_outcome.circuit_open:
                # Unjudged is not passed: escalate, holding the answer in case nothing better.
                self._escalate(
                    run,
                    ReasonNote(
                        Reason.CIRCUIT_OPEN,
                        f"{judge_name} circuit breaker is open; "
                        f"the {self._tiers[index].name} answer was not judged",
                    ),
                    index,
                )
                _degrade(run, f"{CIRCUIT_OPEN}:{judge_name}")
                fallback = _Candidate(answer, index, "unavailable")
                messages = plain
                index += 1
                continue
            verdict = verdict_outcome.verdict
            if verdict is not None and verdict.passes is True:
                await self._cancel(speculative)
                return finish(answer, index, "passed")
            if verdict is not None and verdict.passes is False:
                self._escalate(
                    run,
                    ReasonNote(
                        Reason.JUDGE_FAILED,
                        f"{judge_name} failed the {self._tiers[index].name} answer "
                        f"with {len(verdict.issues)} issue(s)",
                    ),
                    index,
                )
                fallback = _Candidate(answer, index, "failed")
                messages = prompts.escalation_messages(
                    question, answer, list(verdict.issues), history
                )
            else:
                why = (
                    verdict.problem
                    if verdict is not None
                    else f"judge call failed with {self._error_kind(verdict_outcome)}"
                )
                self._escalate(
                    run, ReasonNote(Reason.JUDGE_UNAVAILABLE, f"{judge_name} judge: {why}"), index
                )
                run.degraded.append(f"judge_unavailable:{judge_name}")
                fallback = _Candidate(answer, index, "unavailable")
                # No verdict means no issues to pass on: the next tier gets the plain question.
                messages = plain
            index += 1

    async def _fall_back(
        self,
        run: _Run,
        index: int,
        held: _Candidate | None,
        *,
        plain: list[Message],
        start_index: int,
        decision: Decision | None,
    ) -> CascadeResult:
        """Tier `index` is open and falls back: the answer held, else the nearest tier below.

        An answer from below is returned unjudged (`judge_status = "unavailable"`): the
        tier that would judge it is the one that is down, or sits above it.
        """
        name = self._tiers[index].name
        if held is not None:
            held_name = self._tiers[held.tier_index].name
            run.reasons.append(
                ReasonNote(
                    Reason.CIRCUIT_OPEN,
                    f"{name} circuit breaker is open; the {held_name} answer held is returned",
                )
            )
            return self._result(
                run,
                answer=held.text,
                index=held.tier_index,
                start_index=start_index,
                status=held.status,
                decision=decision,
            )
        for lower in range(index - 1, -1, -1):
            lower_name = self._tiers[lower].name
            outcome = await self._answer(run, lower, plain, None)
            if outcome.stop is not None:
                return self._stopped(run, outcome.stop, None, start_index, decision)
            if outcome.completion is not None:
                run.reasons.append(
                    ReasonNote(
                        Reason.CIRCUIT_OPEN,
                        f"{name} circuit breaker is open; {lower_name} answered instead, unjudged",
                    )
                )
                run.degraded.append(f"fell_back:{lower_name}")
                return self._result(
                    run,
                    answer=outcome.completion.text,
                    index=lower,
                    start_index=start_index,
                    status="unavailable",
                    decision=decision,
                )
            if outcome.error is not None:
                run.degraded.append(f"provider_error:{lower_name}:{outcome.error.kind}")
            else:
                _degrade(run, f"{CIRCUIT_OPEN}:{lower_name}")
        raise AllTiersFailed(
            f"no tier could answer; the {name} circuit breaker is open and no tier below answered"
        )

    def _escalate(self, run: _Run, note: ReasonNote, index: int) -> None:
        """Record why the cascade moves from tier `index` to the next one."""
        run.reasons.append(note)
        self._telemetry.escalated(note, self._tiers[index].name, self._tiers[index + 1].name)

    def _judging(self, run: _Run, decision: Decision | None, sampler: JudgeSampler) -> _Judging:
        """The request's judge mode decides; by default the value policy's plan, else the
        sampler, whose one draw covers every answer of the request."""
        mode = run.query.judge_mode
        if mode == "always":
            return _Judging(True, True, "sampled_out")
        if mode == "never":
            return _Judging(False, False, "sampled_out")
        if mode == "start_only":
            return _Judging(True, False, "skipped")
        if decision is not None and decision.plan is not None:
            return _PLAN_JUDGING[decision.plan.judge]
        sampled = sampler.should_judge(run.request_id, query_type(run.query.route.text))
        return _Judging(sampled, sampled, "sampled_out")

    @staticmethod
    def _error_kind(outcome: _Outcome) -> str:
        return outcome.error.kind if outcome.error is not None else "unknown"

    def _stopped(
        self,
        run: _Run,
        stop: Literal["deadline", "budget"],
        fallback: _Candidate | None,
        start_index: int,
        decision: Decision | None,
    ) -> CascadeResult:
        if fallback is None:
            if stop == "deadline":
                raise DeadlineExceeded("the request's deadline passed before any answer")
            raise BudgetExhausted(
                f"the attempt budget of {self._config.max_attempts} calls was spent "
                "before any answer"
            )
        run.degraded.append(stop)
        return self._result(
            run,
            answer=fallback.text,
            index=fallback.tier_index,
            start_index=start_index,
            status=fallback.status,
            decision=decision,
        )

    def _result(
        self,
        run: _Run,
        *,
        answer: str,
        index: int,
        start_index: int,
        status: JudgeStatus,
        decision: Decision | None,
    ) -> CascadeResult:
        now = self._clock()
        hops = tuple(draft.freeze(now) for draft in run.hops)
        return CascadeResult(
            request_id=run.request_id,
            answer=answer,
            tier=self._tiers[index],
            tier_index=index,
            start_tier_index=start_index,
            hops=hops,
            total_cost_usd=sum(h.cost_usd for h in hops),
            total_latency_ms=(now - run.started) * 1000.0,
            escalated=index > start_index,
            escalation_reasons=tuple(run.reasons),
            judge_status=status,
            degraded=bool(run.degraded),
            degraded_reasons=tuple(run.degraded),
            decision=decision,
        )

    # -- calls ---------------------------------------------------------------------------

    def _max_tokens(self, query: CascadeQuery) -> int:
        if query.max_output_tokens:
            return min(query.max_output_tokens, self._config.max_output_tokens_limit)
        return self._config.max_output_tokens

    async def _answer(
        self,
        run: _Run,
        index: int,
        messages: list[Message],
        prestarted: asyncio.Task[_Outcome] | None,
    ) -> _Outcome:
        """One tier's answer, retried with back-off only when no higher tier can serve."""
        retries = 0
        while True:
            if prestarted is not None:
                outcome = await prestarted
                prestarted = None
            else:
                outcome = await self._call(run, index, "answer", messages, speculative=False)
            error = outcome.error
            if outcome.stop is not None or error is None:
                return outcome
            if not error.retryable or index < self._top:
                # A higher tier serves instead of a back-off; terminal errors never retry.
                return outcome
            if retries >= self._config.max_retries_per_tier:
                return outcome
            retries += 1
            delay = retry_delay(
                error,
                retries,
                self._config.retry_base_delay_s,
                self._config.retry_max_delay_s,
                self._rng,
            )
            if delay >= run.deadline.remaining():
                # Waiting would outlast the request: fail now rather than at the deadline.
                self._telemetry.retry_abandoned(self._tiers[index].name, error.kind, delay)
                logger.info(
                    "cascade %s: %s retry in %.3fs would pass the deadline",
                    run.request_id,
                    self._tiers[index].name,
                    delay,
                )
                return outcome
            self._telemetry.retry(self._tiers[index].name, retries, error.kind, delay)
            await self._sleep(delay)

    async def _judge(self, run: _Run, index: int, question: str, answer: str) -> _Outcome:
        return await self._call(
            run,
            index,
            "judge",
            prompts.judge_messages(question, answer),
            speculative=False,
        )

    def _launch(self, run: _Run, index: int, messages: list[Message]) -> asyncio.Task[_Outcome]:
        """Start `index`'s answer in parallel with the call about to be made.

        The task first runs when the caller next suspends, that is once the primary call
        has taken its place in the hop order and its attempt.
        """
        task = asyncio.create_task(self._call(run, index, "answer", messages, speculative=True))
        run.tasks.add(task)
        return task

    async def _call(
        self,
        run: _Run,
        index: int,
        role: HopRole,
        messages: list[Message],
        *,
        speculative: bool,
    ) -> _Outcome:
        draft, stop, permit = self._prepare(run, index, role, speculative=speculative)
        if permit is None:
            if stop is None:
                return _Outcome(circuit_open=True)
            return await self._execute(run, draft, stop, messages)
        try:
            outcome = await self._execute(run, draft, None, messages)
        except BaseException:
            # Cancelled (or a bug): the call says nothing about the tier's health.
            permit.release()
            raise
        if outcome.completion is not None:
            permit.success()
        elif outcome.error is not None and outcome.error.retryable and outcome.stop is None:
            permit.failure()
        else:
            # Terminal errors are the request's fault, deadline cuts the caller's choice.
            permit.release()
        return outcome

    def _prepare(
        self, run: _Run, index: int, role: HopRole, *, speculative: bool
    ) -> tuple[_HopDraft, Literal["deadline", "budget"] | None, Permit | None]:
        """Reserve the call's hop (in start order), ask the tier's circuit breaker, and
        charge the call to the request's limits.

        The permit is None when no call may be made: `stop` then says which limit refused
        it, or is None when the breaker did (the hop is skipped as `circuit_open`, and
        nothing is charged to the attempt budget).
        """
        tier = self._tiers[index]
        draft = _HopDraft(
            tier=tier,
            role=role,
            attempt=run.next_attempt(tier.name, role),
            speculative=speculative,
            started=self._clock(),
        )
        run.hops.append(draft)
        stop: Literal["deadline", "budget"] | None = None
        permit: Permit | None = None
        if run.deadline.expired():
            stop = "deadline"
        else:
            permit = self._breakers.acquire(tier.name)
            if permit is None:
                draft.outcome, draft.error_kind, draft.latency_s = "skipped", CIRCUIT_OPEN, 0.0
            elif not run.budget.take():
                permit.release()
                permit, stop = None, "budget"
        if stop is not None:
            draft.outcome, draft.error_kind, draft.latency_s = "skipped", stop, 0.0
        if role == "judge" and draft.outcome == "skipped":
            draft.verdict = "unavailable"
        return draft, stop, permit

    async def _execute(
        self,
        run: _Run,
        draft: _HopDraft,
        stop: Literal["deadline", "budget"] | None,
        messages: list[Message],
    ) -> _Outcome:
        """Make one provider call; never raises a ProviderError, only CancelledError."""
        if stop is not None:
            return _Outcome(stop=stop)
        remaining = run.deadline.remaining()
        per_call = self._config.per_call_timeout_s
        timeout_s = min(per_call, remaining)
        bound_by_deadline = remaining <= per_call
        judge = draft.role == "judge"
        system = prompts.JUDGE_SYSTEM if judge else (run.query.system or None)
        draft.started = self._clock()
        with self._telemetry.call_span(draft) as span:
            try:
                async with asyncio.timeout(timeout_s) as scope:
                    completion = await self._provider.complete(
                        model=draft.tier.model,
                        messages=messages,
                        max_tokens=(
                            self._config.judge_max_output_tokens
                            if judge
                            else self._max_tokens(run.query)
                        ),
                        timeout_s=timeout_s,
                        system=system,
                        tool=prompts.JUDGE_TOOL if judge else None,
                        headers=run.query.headers,
                    )
            except TimeoutError:
                if not scope.expired():
                    raise
                return self._failed(
                    run, draft, ProviderTimeout("call timed out"), bound_by_deadline
                )
            except ProviderError as exc:
                return self._failed(run, draft, exc, bound_by_deadline)
            except asyncio.CancelledError:
                # The draft already reads as cancelled: nothing returned, nothing billed.
                draft.outcome = "cancelled"
                raise
            draft.outcome = "ok"
            draft.model = completion.model
            draft.input_tokens = completion.input_tokens
            draft.output_tokens = completion.output_tokens
            draft.stop_reason = completion.stop_reason
            if completion.latency_s > 0:
                draft.latency_s = completion.latency_s
            else:
                draft.latency_s = self._clock() - draft.started
            self._telemetry.completed(span, messages, system, completion)
            verdict = None
            if judge:
                verdict = prompts.parse_verdict(completion.tool_input)
                draft.verdict = (
                    "unavailable"
                    if verdict.passes is None
                    else ("pass" if verdict.passes else "fail")
                )
                draft.issues = verdict.issues
            return _Outcome(completion=completion, verdict=verdict)

    def _failed(
        self, run: _Run, draft: _HopDraft, error: ProviderError, bound_by_deadline: bool
    ) -> _Outcome:
        draft.outcome = "error"
        draft.latency_s = self._clock() - draft.started
        if draft.role == "judge":
            draft.verdict = "unavailable"
        if isinstance(error, ProviderTimeout) and bound_by_deadline:
            draft.error_kind = "deadline"
            return _Outcome(error=error, stop="deadline")
        draft.error_kind = error.kind
        logger.warning(
            "cascade %s: %s %s call failed: %s",
            run.request_id,
            draft.tier.name,
            draft.role,
            error.kind,
        )
        return _Outcome(error=error)

    # -- cancellation --------------------------------------------------------------------

    @staticmethod
    async def _cancel(task: asyncio.Task[_Outcome] | None) -> None:
        """Cancel a call no longer needed and wait until it has recorded how it ended."""
        if task is None or task.done():
            return
        # The message tells the call's span why it was cancelled.
        task.cancel(msg=CANCEL_NOT_NEEDED)
        await asyncio.wait([task])

    @staticmethod
    async def _cancel_all(run: _Run) -> None:
        pending = [task for task in run.tasks if not task.done()]
        for task in pending:
            task.cancel(msg=CANCEL_REQUEST_ENDED)
        if pending:
            await asyncio.wait(pending)
        for task in run.tasks:
            # A call that ended in an unexpected error nobody awaited must not vanish.
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "cascade %s: a speculative call failed unexpectedly",
                    run.request_id,
                    exc_info=task.exception(),
                )
        run.tasks.clear()


def _degrade(run: _Run, reason: str) -> None:
    """Add a degraded reason once (an open tier can be met as judge, then as answerer)."""
    if reason not in run.degraded:
        run.degraded.append(reason)
