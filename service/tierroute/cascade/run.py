"""The per-request state the engine and the tier caller share while a Cascade runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from tierroute.cascade.limits import AttemptBudget, Deadline
from tierroute.cascade.spend import RequestSpend
from tierroute.cascade.streaming import EventStream
from tierroute.cascade.types import CascadeQuery, HopDraft
from tierroute.routing import ReasonNote


@dataclass
class RunState:
    """Everything one request shares: its limits, its hops and what it has learned.

    The tier caller charges `deadline` and `budget`, numbers attempts and appends `hops`;
    the engine adds `reasons` and `degraded` as it decides.
    """

    request_id: str
    query: CascadeQuery
    deadline: Deadline
    budget: AttemptBudget
    started: float
    hops: list[HopDraft] = field(default_factory=list)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    reasons: list[ReasonNote] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    # A streamed request's events (None: a unary Cascade).
    events: EventStream | None = None
    # The cost ceiling and the tenant's budget, charged before every call.
    spend: RequestSpend = field(default_factory=RequestSpend)

    def next_attempt(self, tier: str, role: str) -> int:
        """Number the next call of `tier` in `role` (1 = first), per request."""
        n = self.attempts.get((tier, role), 0) + 1
        self.attempts[(tier, role)] = n
        return n
