"""What one Cascade may spend: its cost ceiling and its tenant's budget, before every call.

Before each model call (answer, judge, speculative, retry) the call's worst case is
reserved: its prompt's estimated input tokens plus its maximum output tokens, at its tier's
prices. A call whose worst case would take the request past `policy.max_cost_usd` (counting
what its calls so far cost and the worst case of those still running) is not made, and its
hop says so (`skipped`, `cost_ceiling`, with the figures in `skip_reason`). The tenant's
ledger, when there is one, is asked next; its refusal skips the hop as `tenant_budget`.
After the call, the reservation is settled with the real cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tierroute.cascade.types import HopDraft
from tierroute.errors import CostCeilingReached, TenantLimited, TierrouteError

SpendStop = Literal["cost_ceiling", "tenant_budget"]
SPEND_STOPS: tuple[SpendStop, ...] = ("cost_ceiling", "tenant_budget")


class Ledger(Protocol):
    """A tenant's budget as a Cascade sees it (`tierroute.tenancy.TenantLedger`)."""

    @property
    def serves_cheapest(self) -> bool:
        """Whether a call the budget refuses is answered by the cheapest tier instead."""
        ...

    async def reserve(
        self, tier_name: str, tier_index: int, worst_usd: float, worst_tokens: int
    ) -> str:
        """A reservation id; raises TenantLimited when the call does not fit.

        `tier_index` is the call's place on the ladder, -1 for a probe outside it.
        """
        ...

    def settle(self, reservation: str, cost_usd: float, tokens: int) -> None:
        """Replace the reservation's worst case with the call's real cost."""
        ...


@dataclass
class Held:
    """One call's reservation: its worst case, and the ledger's id for it."""

    worst_usd: float
    reservation: str | None


class RequestSpend:
    """The request's ceiling (0 = none) and its tenant's ledger (None = none)."""

    def __init__(self, ceiling_usd: float = 0.0, ledger: Ledger | None = None) -> None:
        self.ceiling_usd = ceiling_usd
        self._ledger = ledger
        self.spent_usd = 0.0
        self.in_flight_usd = 0.0
        # Why the last call was refused: raised when the request has no answer to return.
        self.refusal: TierrouteError | None = None

    @property
    def serves_cheapest(self) -> bool:
        """The tenant's budget refused a call and its policy is to serve the cheapest tier."""
        return (
            isinstance(self.refusal, TenantLimited)
            and self._ledger is not None
            and self._ledger.serves_cheapest
        )

    @property
    def over_budget(self) -> bool:
        """Whether the tenant's budget refused a call of this request."""
        return isinstance(self.refusal, TenantLimited)

    async def reserve(
        self, draft: HopDraft, index: int, worst_usd: float, worst_tokens: int, max_tokens: int
    ) -> Held | SpendStop:
        """Hold the call's worst case, or the stop that refuses it (its hop then skipped).

        The ceiling is checked and charged before anything suspends, so a call started
        first (the primary) is charged before one started just after it (the speculative).
        """
        tier = draft.tier.name
        if self.ceiling_usd > 0:
            after = self.spent_usd + self.in_flight_usd + worst_usd
            if after > self.ceiling_usd + 1e-12:
                detail = (
                    f"the {tier} {draft.role} call's worst case ${worst_usd:.6f} "
                    f"({max_tokens} output tokens) would take the request to ${after:.6f}, "
                    f"past policy.max_cost_usd ${self.ceiling_usd:g}"
                )
                self.refusal = CostCeilingReached(
                    f"no answer within the cost ceiling: {detail}; raise policy.max_cost_usd "
                    "or lower max_output_tokens"
                )
                _skip(draft, "cost_ceiling", detail)
                return "cost_ceiling"
        self.in_flight_usd += worst_usd
        reservation: str | None = None
        if self._ledger is not None:
            try:
                reservation = await self._ledger.reserve(tier, index, worst_usd, worst_tokens)
            except TenantLimited as exc:
                self.in_flight_usd -= worst_usd
                self.refusal = exc
                _skip(draft, "tenant_budget", str(exc))
                return "tenant_budget"
            except BaseException:
                self.in_flight_usd -= worst_usd
                raise
        return Held(worst_usd, reservation)

    def settle(self, held: Held, draft: HopDraft) -> None:
        """The call ended (any way): its real cost replaces its worst case."""
        cost = draft.cost_usd()
        self.in_flight_usd -= held.worst_usd
        self.spent_usd += cost
        if self._ledger is not None and held.reservation is not None:
            tokens = (
                draft.input_tokens
                + draft.output_tokens
                + draft.cache_creation_input_tokens
                + draft.cache_read_input_tokens
            )
            self._ledger.settle(held.reservation, cost, tokens)


def _skip(draft: HopDraft, kind: SpendStop, detail: str) -> None:
    draft.outcome, draft.error_kind, draft.latency_s = "skipped", kind, 0.0
    draft.skip_reason = detail
    if draft.role == "judge":
        draft.verdict = "unavailable"
