"""The tenancy checks every edge calls the same way: who the tenant is, whether its rate
limits and budget admit a call, its ledger for the Cascade's per-call reservations, its
sessions and its request ids.

Transport-free: the gRPC servicer (and any other edge) calls `Tenancy` and translates the
errors it raises (`TenantBudgetExhausted`, `TenantRateLimited`, `RequestInProgress`,
`InvalidRequest`, `TenancyUnavailable`) to its own statuses. docs/tenancy.md has the rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tierroute.errors import (
    ConfigError,
    InvalidRequest,
    PermissionDenied,
    RequestInProgress,
    TenancyUnavailable,
    TenantBudgetExhausted,
    TenantRateLimited,
)
from tierroute.settings import Settings, TenantConfig, tenants_from_mapping
from tierroute.tenancy.state import Claim, Spend, StateStore

logger = logging.getLogger(__name__)

ANY_TENANT = "*"


@dataclass(frozen=True)
class TenantBook:
    """The configured tenants' limits; "*" covers any tenant without a table of its own."""

    tenants: Mapping[str, TenantConfig]

    @classmethod
    def of(cls, tenants: tuple[TenantConfig, ...]) -> TenantBook:
        """The book of `tenants`."""
        return cls({t.id: t for t in tenants})

    @classmethod
    def load(cls, path: Path) -> TenantBook:
        """Read a TOML file of `[tenants.<id>]` tables (tenancy.tenants_file)."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read tenants file {path}: {exc.strerror}; check tenancy.tenants_file"
            ) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"tenants file {path} (tenancy.tenants_file) does not parse: {exc}"
            ) from exc
        unknown = set(data) - {"tenants"}
        if unknown:
            raise ConfigError(
                f"tenants file {path} (tenancy.tenants_file) holds unknown tables "
                f"{sorted(unknown)}; it holds [tenants.<id>] tables only"
            )
        return cls.of(tenants_from_mapping(data.get("tenants", {}), f"{path}: tenants"))

    def limits(self, tenant: str) -> TenantConfig | None:
        """The tenant's limits, or "*"'s, or None (unlimited)."""
        return self.tenants.get(tenant) or self.tenants.get(ANY_TENANT)


@dataclass(frozen=True)
class Admission:
    """A call let in: its tenant, the tenant's limits, and whether its budget is spent
    (`cheapest`: the call is served from the cheapest tier, unjudged)."""

    tenant: str
    limits: TenantConfig | None
    cheapest: bool = False


def resolve_tenant(
    *,
    token_tenant: str | None,
    auth_enabled: bool,
    requested: str,
    header: str | None,
) -> str:
    """The call's tenant (docs/tenancy.md).

    With authentication on, the token's tenant; a tenant id or tenant header naming another
    tenant is PermissionDenied (an admin token may act for the tenant it names). With it
    off, the request's tenant_id, else the tenant header, else "" (the anonymous tenant).
    """
    named = requested or (header or "")
    if auth_enabled and token_tenant is not None:
        if named and named != token_tenant:
            raise PermissionDenied("the token does not belong to the requested tenant")
        return token_tenant
    return named


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "when its running calls settle"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"at {stamp} (in {max(ts - now, 0.0):.0f} s)"


def budget_message(tenant: str, limits: TenantConfig, spend: Spend, now: float) -> str:
    """Why a tenant's budget refuses a call: its window's spend and when it frees."""
    return (
        f"tenant {tenant!r} has spent ${spend.total_usd:.4f} of its ${limits.budget_usd:g} "
        f"budget over the last {limits.budget_window} (${spend.reserved_usd:.4f} of it "
        f"reserved by calls running); the budget frees {_when(spend.frees_at, now)}"
    )


class TenantLedger:
    """One Cascade's view of its tenant's budget: each model call reserved at its worst
    case before it is made, settled with its real cost after.

    In cheapest mode (budget spent, `on_budget_exhausted = "cheapest"`) calls on the
    cheapest tier are recorded without a limit and calls above it refused.
    """

    def __init__(self, tenancy: Tenancy, admission: Admission, request_id: str) -> None:
        self._tenancy = tenancy
        self._admission = admission
        self._request_id = request_id

    @property
    def serves_cheapest(self) -> bool:
        """Whether the tenant's policy is to answer from the cheapest tier when over budget
        (its cheapest-tier calls are then never refused, only recorded)."""
        limits = self._admission.limits
        return limits is not None and limits.on_budget_exhausted == "cheapest"

    async def reserve(
        self, tier_name: str, tier_index: int, worst_usd: float, worst_tokens: int
    ) -> str:
        """A reservation id; TenantBudgetExhausted when the call does not fit the budget."""
        admission = self._admission
        limits = admission.limits
        tenancy = self._tenancy
        if admission.cheapest and tier_index > 0:
            raise TenantBudgetExhausted(
                f"tenant {admission.tenant!r} is over budget: only the cheapest tier serves",
                tenant=admission.tenant,
                retry_after_s=None,
            )
        assert limits is not None  # tenants without limits have no ledger
        unlimited = admission.cheapest or (tier_index == 0 and self.serves_cheapest)
        budget = 0.0 if unlimited else limits.budget_usd
        window = limits.window_s
        reservation, spend = await tenancy.state.reserve(
            admission.tenant,
            self._request_id,
            tier_name,
            worst_usd=worst_usd,
            worst_tokens=worst_tokens,
            budget_usd=budget,
            window_s=window,
        )
        if reservation is None:
            now = tenancy.clock()
            raise TenantBudgetExhausted(
                budget_message(admission.tenant, limits, spend, now)
                + f"; this {tier_name} call could cost up to ${worst_usd:.4f}",
                tenant=admission.tenant,
                retry_after_s=spend.frees_at - now if spend.frees_at is not None else None,
            )
        return reservation

    def settle(self, reservation: str, cost_usd: float, tokens: int) -> None:
        """Settle in the background (it may be called while the request is cancelled)."""
        self._tenancy.settle_soon(self._admission.tenant, reservation, cost_usd, tokens)


class Tenancy:
    """The tenants' limits (reloadable), their state store, and every check on them."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        book: TenantBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = settings.tenancy
        self.state = state
        self._book = book
        self.clock = clock
        self._settling: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> Tenancy:
        """The state store the settings name, and the tenants of the config or tenants file."""
        url = settings.tenancy.state_url.get()
        if not url:
            url = settings.querylog.url.get() if settings.querylog.enabled else "memory"
        state = StateStore.open(
            url, connect_timeout_s=settings.querylog.connect_timeout_s, clock=clock
        )
        path = settings.tenancy.tenants_file
        book = TenantBook.load(path) if path is not None else TenantBook.of(settings.tenants)
        return cls(settings, state, book, clock=clock)

    @property
    def book(self) -> TenantBook:
        """The tenants' limits now in force."""
        return self._book

    def swap_book(self, book: TenantBook) -> None:
        """Put reloaded limits in force; calls already admitted keep the ones they had."""
        self._book = book

    async def start(self) -> None:
        """Open the state store (creating its tables)."""
        await self.state.start()

    async def aclose(self) -> None:
        """Wait for settlements in flight, then close the store."""
        if self._settling:
            await asyncio.wait(set(self._settling))
        await self.state.aclose()

    # -- admission ------------------------------------------------------------------------

    async def admit(self, tenant: str, *, model_calls: bool) -> Admission:
        """Count a call against its tenant's rate limits, and check its budget when it will
        call models; TenantRateLimited or (reject mode) TenantBudgetExhausted."""
        limits = self._book.limits(tenant)
        if limits is None:
            return Admission(tenant, None)
        # A Route calls no model: only its requests count.
        rpm = limits.requests_per_minute
        tpm = limits.tokens_per_minute if model_calls else 0
        if rpm or tpm:
            admitted, rate = await self.state.admit(
                tenant, requests_per_minute=rpm, tokens_per_minute=tpm
            )
            if not admitted:
                now = self.clock()
                if rpm and rate.requests >= rpm:
                    what, free_at = (
                        f"{rate.requests} requests of {rpm} per minute",
                        rate.requests_free_at,
                    )
                else:
                    what, free_at = f"{rate.tokens} tokens of {tpm} per minute", rate.tokens_free_at
                raise TenantRateLimited(
                    f"tenant {tenant!r} is at its rate limit ({what}); retry {_when(free_at, now)}",
                    tenant=tenant,
                    retry_after_s=free_at - now if free_at is not None else None,
                )
        if not (model_calls and limits.budget_usd > 0):
            return Admission(tenant, limits)
        spend = await self.state.spend(tenant, limits.window_s, limits.budget_usd)
        if spend.total_usd < limits.budget_usd:
            return Admission(tenant, limits)
        now = self.clock()
        if limits.on_budget_exhausted == "cheapest":
            logger.info("tenant %s over budget: served from the cheapest tier", tenant)
            return Admission(tenant, limits, cheapest=True)
        raise TenantBudgetExhausted(
            budget_message(tenant, limits, spend, now),
            tenant=tenant,
            retry_after_s=spend.frees_at - now if spend.frees_at is not None else None,
        )

    def ledger(self, admission: Admission, request_id: str) -> TenantLedger | None:
        """The ledger a Cascade reserves and settles each model call with; None for a tenant
        without limits, whose calls then cost no state round trip."""
        if admission.limits is None:
            return None
        return TenantLedger(self, admission, request_id)

    def settle_soon(self, tenant: str, reservation: str, cost_usd: float, tokens: int) -> None:
        """Settle a reservation in a task of its own, awaited at shutdown."""
        task = asyncio.get_running_loop().create_task(
            self._settle(tenant, reservation, cost_usd, tokens)
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, tenant: str, reservation: str, cost_usd: float, tokens: int) -> None:
        try:
            await self.state.settle(tenant, reservation, cost_usd, tokens)
        except TenancyUnavailable as exc:
            # The reservation stays at its worst case: the budget errs on the safe side.
            logger.warning("a spend of tenant %s was not settled: %s", tenant, exc)

    # -- sessions -------------------------------------------------------------------------

    async def session(self, tenant: str, session_id: str) -> tuple[int, int | None]:
        """The session's floor and open agent loop ((0, None): new, expired or unreadable)."""
        if not session_id:
            return 0, None
        try:
            return await self.state.session(tenant, session_id)
        except TenancyUnavailable as exc:
            # Routing without the floor beats refusing the call: a session is a preference,
            # a budget is a limit (budgets and request ids fail closed instead).
            logger.warning("session of tenant %s not read; routing without it: %s", tenant, exc)
            return 0, None

    async def answered(
        self, tenant: str, session_id: str, tier_index: int, *, tool_call: bool
    ) -> None:
        """A model answered from `tier_index`: raise the session's floor (only answered
        calls do; a Route never does) and open or close its agent loop."""
        if session_id:
            await self.state.answered(
                tenant,
                session_id,
                tier_index,
                tier_index if tool_call else None,
                self._config.session_ttl_s,
            )

    # -- request ids ----------------------------------------------------------------------

    async def claim(
        self, tenant: str, request_id: str, fingerprint: str, lease_s: float
    ) -> bytes | None:
        """Claim a Cascade's request id: the recorded result of an earlier call with it, or
        None when this call is to run. RequestInProgress while another runs it;
        InvalidRequest when it was used for a different request."""
        claim: Claim = await self.state.claim(tenant, request_id, fingerprint, lease_s)
        if claim.state == "run":
            return None
        if claim.state == "done":
            assert claim.result is not None
            return claim.result
        if claim.state == "mismatch":
            raise InvalidRequest(
                "this request_id was already used for a different request; use a new request_id"
            )
        raise RequestInProgress(
            "a call with this request_id is still running; retry once it has ended"
        )

    async def record(self, tenant: str, request_id: str, result: bytes) -> None:
        """Keep a finished call's result for repeats of its request id."""
        await self.state.record(tenant, request_id, result, self._config.idempotency_ttl_s)

    def release_soon(self, tenant: str, request_id: str) -> None:
        """A claimed call failed: its request id may run again (released in a task of its
        own, as the call may be ending by cancellation; its lease frees it otherwise)."""
        task = asyncio.get_running_loop().create_task(self.release(tenant, request_id))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def release(self, tenant: str, request_id: str) -> None:
        """Free a claimed request id (a failed call's) for a retry to run afresh."""
        try:
            await self.state.release(tenant, request_id)
        except TenancyUnavailable as exc:
            logger.warning("a request id of tenant %s was not released: %s", tenant, exc)

    async def open_cascade(
        self,
        tenant: str,
        request_id: str,
        fingerprint: str,
        *,
        session_id: str,
        lease_s: float,
    ) -> CascadeCall:
        """Everything a Cascade checks before it runs, in order: its request id (a repeat
        gets the recorded result, and counts toward no limit), its tenant's rate limits and
        budget, and its session's floor."""
        if request_id:
            recorded = await self.claim(tenant, request_id, fingerprint, lease_s)
            if recorded is not None:
                return CascadeCall(self, Admission(tenant, None), request_id, recorded=recorded)
        try:
            admission = await self.admit(tenant, model_calls=True)
            floor, loop = await self.session(tenant, session_id)
        except BaseException:
            if request_id:
                self.release_soon(tenant, request_id)
            raise
        return CascadeCall(
            self,
            admission,
            request_id,
            claimed=bool(request_id),
            session_floor=floor,
            session_loop_tier=loop,
        )


@dataclass
class CascadeCall:
    """One Cascade between its checks and its end: a recorded result to return, or the
    admission, ledger and session state to run with."""

    tenancy: Tenancy
    admission: Admission
    request_id: str
    recorded: bytes | None = None
    claimed: bool = False
    session_floor: int = 0
    session_loop_tier: int | None = None

    def ledger(self, request_id: str) -> TenantLedger | None:
        """The ledger of this call's model calls (`request_id`: the id the run uses)."""
        return self.tenancy.ledger(self.admission, request_id)

    async def answered(
        self, session_id: str, tier_index: int, *, tool_call: bool, sticky: bool, result: bytes
    ) -> None:
        """The call answered: raise its session's floor, keep its result for repeats."""
        tenant = self.admission.tenant
        try:
            if sticky:
                await self.tenancy.answered(tenant, session_id, tier_index, tool_call=tool_call)
            if self.claimed:
                await self.tenancy.record(tenant, self.request_id, result)
        except TenancyUnavailable as exc:
            # The answer is paid for and goes out; a repeat may run again.
            logger.warning("tenant %s: the answer's session or result not kept: %s", tenant, exc)
            if self.claimed:
                self.tenancy.release_soon(tenant, self.request_id)

    async def failed(self, *, cancelled: bool) -> None:
        """The call failed: its request id may run again at once. A cancelled call's is
        released in a task of its own (nothing more may be awaited while it unwinds)."""
        if not self.claimed:
            return
        if cancelled:
            self.tenancy.release_soon(self.admission.tenant, self.request_id)
        else:
            await self.tenancy.release(self.admission.tenant, self.request_id)
