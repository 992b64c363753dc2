"""The Cascade's values: the query and result the servicer converts, the hops in between,
and what one call's outcome is.

The bottom floor of the wing: it imports no other cascade module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from tierroute.errors import ProviderError
from tierroute.providers import AnswerParams, Block, Completion, Message, prompts
from tierroute.routing import Decision, ReasonNote, RouteQuery
from tierroute.settings import TierConfig

HopRole = Literal["answer", "judge", "probe"]
HopOutcome = Literal["ok", "error", "cancelled", "skipped"]
VerdictValue = Literal["pass", "fail", "unavailable"]
JudgeStatus = Literal[
    "passed",
    "not_required",
    "sampled_out",
    "unavailable",
    "failed",
    "self_accepted",
    "skipped",
    "tool_use",
    "agreed",
]
SpeculationMode = Literal["default", "on", "off"]
JudgeMode = Literal["default", "always", "never", "start_only", "agreement", "agreement_mid"]
JUDGE_MODES: tuple[JudgeMode, ...] = (
    "default",
    "always",
    "never",
    "start_only",
    "agreement",
    "agreement_mid",
)
# The judge modes that check answers by agreement with a probe instead of a judge.
AGREEMENT_MODES: tuple[JudgeMode, ...] = ("agreement", "agreement_mid")
# The request limit that refused or cut a call: its deadline, its attempt budget, its cost
# ceiling (policy.max_cost_usd) or its tenant's budget.
Stop = Literal["deadline", "budget", "cost_ceiling", "tenant_budget"]


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
    # The question's own turn with its content blocks (None: `route.text` as plain text).
    turn: Message | None = None
    # The caller's Messages API parameters (sampling, tools, cached system blocks), sent
    # unchanged with every answer call and never with a judge call.
    params: AnswerParams = field(default_factory=AnswerParams)
    # Streaming only: stream every answer as it is drafted, retracting those withdrawn.
    stream_drafts: bool = False
    # The tenant's budget is spent and its policy is "cheapest": the cheapest tier answers,
    # unjudged (docs/tenancy.md).
    cheapest_only: bool = False
    # The start tier answers alone: no judge, no speculation, no escalation; its failure (or
    # its open breaker) is the request's error. A concrete model id on the HTTP endpoint.
    pinned: bool = False

    @property
    def question_turn(self) -> Message:
        """The last user turn as the answering tiers are sent it."""
        return self.turn if self.turn is not None else Message("user", self.route.text)


@dataclass(frozen=True)
class Hop:
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
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Why a skipped hop was not made, with the figures (cost ceiling, tenant budget).
    skip_reason: str = ""


@dataclass(frozen=True)
class CascadeResult:
    """The answer, the tier that produced it, and every hop that led there."""

    request_id: str
    answer: str
    tier: TierConfig
    tier_index: int
    start_tier_index: int
    hops: tuple[Hop, ...]
    total_cost_usd: float
    total_latency_ms: float
    escalated: bool
    escalation_reasons: tuple[ReasonNote, ...]
    judge_status: JudgeStatus
    degraded: bool
    degraded_reasons: tuple[str, ...]
    decision: Decision | None
    # The answer's content blocks (its text, and its tool_use blocks when it calls tools).
    content: tuple[Block, ...] = ()
    stop_reason: str = ""
    # The tenant's budget was spent: the cheapest tier answered, unjudged.
    tenant_over_budget: bool = False


@dataclass
class HopDraft:
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
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    skip_reason: str = ""

    def cost_usd(self) -> float:
        """The call's cost on its tier, cache writes and reads included."""
        return self.tier.cost_usd(
            self.input_tokens,
            self.output_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        )

    def freeze(self, now: float) -> Hop:
        """The hop as it reads at `now` (a call still in flight reads as cancelled)."""
        latency = self.latency_s if self.latency_s is not None else now - self.started
        return Hop(
            tier=self.tier.name,
            model=self.model or self.tier.model,
            role=self.role,
            outcome=self.outcome,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd(),
            latency_ms=latency * 1000.0,
            verdict=self.verdict,
            issues=self.issues,
            attempt=self.attempt,
            speculative=self.speculative,
            error_kind=self.error_kind,
            stop_reason=self.stop_reason,
            cache_creation_input_tokens=self.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens,
            skip_reason=self.skip_reason,
        )


@dataclass(frozen=True)
class CallOutcome:
    """How one call ended: a completion, a provider error, or a stop (deadline, budget)."""

    completion: Completion | None = None
    error: ProviderError | None = None
    stop: Stop | None = None
    verdict: prompts.Verdict | None = None
    # The tier's circuit breaker refused the call: nothing was sent.
    circuit_open: bool = False
