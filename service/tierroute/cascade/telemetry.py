"""The cascade's spans, events and metrics, in one place: what the engine and the tier
caller report about a request, never its prompt or answer text unless content capture is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from tierroute.cascade.types import CascadeResult, HopDraft
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
    EVENT_CANCELLED,
    EVENT_CONTENT,
    EVENT_ESCALATION,
    EVENT_RETRY,
    EVENT_RETRY_ABANDONED,
    SPAN_ANSWER,
    SPAN_JUDGE,
    SPAN_ROUTE,
)
from tierroute.providers import Completion, Message, prompts
from tierroute.routing import Decision, ReasonNote, annotate_route
from tierroute.settings import Settings


class CascadeTelemetry:
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

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        tracer: trace.Tracer | None = None,
        provider_name: str = "anthropic",
        metrics: Metrics | None = None,
    ) -> CascadeTelemetry:
        """Telemetry for the configured tiers; without `metrics`, a `Metrics` of its own."""
        return cls(
            tracer,
            provider_name,
            metrics if metrics is not None else Metrics(provider_name=provider_name),
            tuple(t.name for t in settings.tiers),
            capture_content=settings.telemetry.capture_content,
        )

    @contextlib.contextmanager
    def route_span(self) -> Iterator[trace.Span]:
        """The request's one routing span."""
        with self._tracer.start_as_current_span(SPAN_ROUTE) as span:
            yield span

    def routed(self, span: trace.Span, decision: Decision) -> None:
        """The routing decision, on its span and in the metrics."""
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
    def call_span(self, draft: HopDraft) -> Iterator[trace.Span]:
        """The span of one provider call; it reports the draft as it stands when it ends."""
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
                # The cascade cancels with a reason as the message; none means the caller left.
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

    def _finished(self, span: trace.Span, draft: HopDraft) -> None:
        tier, role = draft.tier.name, draft.role
        cost = draft.cost_usd()
        span.set_attribute(ATTR_OUTCOME, draft.outcome)
        span.set_attribute(ATTR_COST_USD, cost)
        if draft.outcome == "ok":
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, draft.model or draft.tier.model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, draft.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, draft.output_tokens)
            if draft.cache_creation_input_tokens:
                span.set_attribute(
                    gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
                    draft.cache_creation_input_tokens,
                )
            if draft.cache_read_input_tokens:
                span.set_attribute(
                    gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, draft.cache_read_input_tokens
                )
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
        """An escalation event on the request span."""
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
        """A retry event on the request span: the `retry`-th retry, after `delay_s`."""
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
        """A retry not made because its delay would outlast the deadline."""
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
        """The request's summary on its span, and its count in the metrics."""
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
        """A request that ended in an error or a cancellation."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({ATTR_REQUEST_ID: request_id, ATTR_STRATEGY: strategy})
        outcome = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
        self._metrics.request(rpc="cascade", tier="none", strategy=strategy, outcome=outcome)
