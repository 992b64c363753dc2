"""Small frozen dataclasses for what Route, Cascade and Feedback return, built from protobuf.

Enum values become short lower-case names (`"classifier"`, `"passed"`), reason codes stay
upper-case (`"SIMPLE_QUERY"`), the way the `tierroute` CLI prints them. An enum value this
client does not know (from a newer server) comes through as its number, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tierroute_client._blocks import block_from_pb
from tierroute_client.v1 import tierroute_pb2 as pb


def _enum_name(enum: Any, value: int, prefix: str, *, upper: bool = False) -> str:
    try:
        name = str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        # Proto3 enums are open: a newer server may send a value this client predates.
        return str(value)
    return name if upper else name.lower()


@dataclass(frozen=True, slots=True)
class Reason:
    """A machine-readable reason code (`"RISK_ABOVE_THRESHOLD"`) and a short detail."""

    code: str
    detail: str

    @classmethod
    def from_pb(cls, reason: pb.Reason) -> Reason:
        """Convert one protobuf Reason."""
        return cls(
            _enum_name(pb.ReasonCode, reason.code, "REASON_CODE_", upper=True), reason.detail
        )


@dataclass(frozen=True, slots=True)
class Features:
    """The shape signals of the routed text, as the heuristic sees them."""

    estimated_tokens: int
    has_code_block: bool
    multi_step: bool
    query_type: str
    # How much the text looks like the router model's training prompts (0-1); None when the
    # server's model has no such signal (or the heuristic strategy decided).
    familiarity: float | None = None


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Which tier should answer, and everything that explains the decision."""

    request_id: str
    tier: str
    model: str
    tier_index: int
    strategy: str
    rule: str | None
    scores: dict[str, float]
    confidence: float
    thresholds: dict[str, float]
    reasons: tuple[Reason, ...]
    model_version: str
    decision_time_us: int
    estimated_cost_usd: float
    features: Features

    @classmethod
    def from_pb(cls, response: pb.RouteResponse) -> RouteResult:
        """Convert a RouteResponse."""
        f = response.features
        return cls(
            request_id=response.request_id,
            tier=response.tier.name,
            model=response.tier.model,
            tier_index=response.tier.index,
            strategy=_enum_name(pb.Strategy, response.strategy, "STRATEGY_"),
            rule=(
                None
                if response.rule == pb.DECISION_RULE_UNSPECIFIED
                else _enum_name(pb.DecisionRule, response.rule, "DECISION_RULE_")
            ),
            scores={s.tier: s.probability for s in response.scores},
            confidence=response.confidence,
            thresholds=dict(response.thresholds),
            reasons=tuple(Reason.from_pb(r) for r in response.reasons),
            model_version=response.model_version,
            decision_time_us=response.decision_time_us,
            estimated_cost_usd=response.estimated_cost_usd,
            features=Features(
                estimated_tokens=f.estimated_tokens,
                has_code_block=f.has_code_block,
                multi_step=f.multi_step,
                query_type=f.query_type,
                familiarity=f.familiarity if f.HasField("familiarity") else None,
            ),
        )


@dataclass(frozen=True, slots=True)
class Hop:
    """One model call inside a cascade: an answer or a judge verdict."""

    tier: str
    model: str
    role: str
    outcome: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    verdict: str | None
    issues: tuple[str, ...]
    attempt: int
    speculative: bool
    error_kind: str | None
    stop_reason: str | None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_pb(cls, hop: pb.Hop) -> Hop:
        """Convert one protobuf Hop."""
        return cls(
            tier=hop.tier,
            model=hop.model,
            role=_enum_name(pb.HopRole, hop.role, "HOP_ROLE_"),
            outcome=_enum_name(pb.HopOutcome, hop.outcome, "HOP_OUTCOME_"),
            input_tokens=hop.input_tokens,
            output_tokens=hop.output_tokens,
            cost_usd=hop.cost_usd,
            latency_ms=hop.latency_ms,
            verdict=(
                None
                if hop.verdict == pb.JUDGE_VERDICT_UNSPECIFIED
                else _enum_name(pb.JudgeVerdict, hop.verdict, "JUDGE_VERDICT_")
            ),
            issues=tuple(hop.issues),
            attempt=hop.attempt,
            speculative=hop.speculative,
            error_kind=hop.error_kind or None,
            stop_reason=hop.stop_reason or None,
            cache_creation_input_tokens=hop.cache_creation_input_tokens,
            cache_read_input_tokens=hop.cache_read_input_tokens,
        )


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """The answer, the tier that gave it, and every hop, cost and verdict on the way."""

    request_id: str
    answer: str
    tier: str
    model: str
    hops: tuple[Hop, ...]
    total_cost_usd: float
    total_latency_ms: float
    escalated: bool
    escalation_reasons: tuple[Reason, ...]
    judge_status: str
    degraded: bool
    degraded_reasons: tuple[str, ...]
    route: RouteResult | None
    # The answer's content blocks as Messages API dicts (text, and tool_use for a tool
    # call, whose judge_status is "tool_use"), and why it stopped.
    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str = ""

    @property
    def tool_calls(self) -> tuple[dict[str, Any], ...]:
        """The answer's tool_use blocks: run them and send the results in the next turn."""
        return tuple(b for b in self.content if b.get("type") == "tool_use")

    @classmethod
    def from_pb(cls, response: pb.CascadeResponse) -> CascadeResult:
        """Convert a CascadeResponse."""
        return cls(
            request_id=response.request_id,
            answer=response.answer,
            tier=response.tier.name,
            model=response.tier.model,
            hops=tuple(Hop.from_pb(h) for h in response.hops),
            total_cost_usd=response.total_cost_usd,
            total_latency_ms=response.total_latency_ms,
            escalated=response.escalated,
            escalation_reasons=tuple(Reason.from_pb(r) for r in response.escalation_reasons),
            judge_status=_enum_name(pb.JudgeStatus, response.judge_status, "JUDGE_STATUS_"),
            degraded=response.degraded,
            degraded_reasons=tuple(response.degraded_reasons),
            route=RouteResult.from_pb(response.route) if response.HasField("route") else None,
            content=tuple(block_from_pb(b) for b in response.content),
            stop_reason=response.stop_reason,
        )
