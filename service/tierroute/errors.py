"""The one exception tree of tierroute; `tierroute.api.status` maps it to gRPC codes.

TierrouteError
├── InvalidRequest            bad input from the caller
│   ├── QueryTooLong          a query over the configured character limit
│   └── RequestTooLarge       an HTTP request body over the configured byte limit
├── NotFound                  an unknown request id, tier or model version
├── Unauthenticated           no or unknown credential
├── PermissionDenied          a credential without the right to this call
├── Overloaded                admission control refused the call
├── ShuttingDown              the server is draining: retry on another replica
├── BudgetExhausted           the request's attempt budget is spent
├── TenantLimited             a tenant's budget or rate limit refused the call
│   ├── TenantBudgetExhausted the tenant's rolling-window budget is spent
│   └── TenantRateLimited     requests_per_minute or tokens_per_minute reached
├── CostCeilingReached        policy.max_cost_usd leaves room for no answer at all
├── RequestInProgress         a request id still running is sent again
├── TenancyUnavailable        the tenant state (spend, sessions) cannot be read now
├── DeadlineExceeded          the request's deadline passed
├── ConfigError               configuration that cannot work
├── ModelLoadError            a missing, corrupt or mismatched router model
├── ProviderError             a model provider failed (transient unless noted)
│   ├── ProviderTimeout
│   ├── RateLimited           carries retry_after seconds
│   ├── ProviderOverloaded    HTTP 529
│   ├── ProviderServerError   HTTP 5xx
│   ├── ProviderConnectionError
│   └── TerminalProviderError HTTP 400/401/403/404/413: never retried
├── AnswerInterrupted         a streamed answer broke off after its text was sent
└── AllTiersFailed            no tier could answer
"""

from __future__ import annotations


class TierrouteError(Exception):
    """Base of every error tierroute raises on purpose."""


class InvalidRequest(TierrouteError):
    """The caller sent something the service cannot accept."""


class QueryTooLong(InvalidRequest):
    """The query is over the configured maximum number of characters."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"query has {length} characters; the limit is {limit}")
        self.length = length
        self.limit = limit


class RequestTooLarge(InvalidRequest):
    """An HTTP request body is over the configured maximum number of bytes."""


class NotFound(TierrouteError):
    """An id named by the caller is unknown."""


class Unauthenticated(TierrouteError):
    """The call carries no valid credential."""


class PermissionDenied(TierrouteError):
    """The credential is valid but may not make this call."""


class Overloaded(TierrouteError):
    """Too many calls are in flight; the caller should back off and retry."""


class ShuttingDown(TierrouteError):
    """The server is draining for shutdown; the caller should retry on another replica."""


class BudgetExhausted(TierrouteError):
    """The request's shared attempt budget is spent."""


class TenantLimited(TierrouteError):
    """A tenant's budget or rate limit refused the call; `retry_after_s` says when it frees."""

    def __init__(self, message: str, *, tenant: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.retry_after_s = retry_after_s


class TenantBudgetExhausted(TenantLimited):
    """The tenant's budget over its rolling window is spent (`on_budget_exhausted = reject`)."""


class TenantRateLimited(TenantLimited):
    """The tenant reached its requests_per_minute or tokens_per_minute."""


class CostCeilingReached(TierrouteError):
    """The request's cost ceiling (policy.max_cost_usd) leaves room for no answer call."""


class RequestInProgress(TierrouteError):
    """A Cascade with this tenant's request id is still running; retry once it has ended."""


class TenancyUnavailable(TierrouteError):
    """The tenant state (budgets, sessions, request ids) cannot be reached; retry later."""


class DeadlineExceeded(TierrouteError):
    """The request's deadline passed before an answer was ready."""


class ConfigError(TierrouteError):
    """The configuration cannot work."""


class ModelLoadError(TierrouteError):
    """The router model is missing, corrupt or does not match its metadata."""


class ProviderError(TierrouteError):
    """A model provider failed; `retryable` says whether trying again may help."""

    kind = "provider_error"
    retryable = True

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    kind = "timeout"


class RateLimited(ProviderError):
    """HTTP 429; retry after `retry_after` seconds (None when not given)."""

    kind = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class ProviderOverloaded(ProviderError):
    """HTTP 529: the provider is overloaded."""

    kind = "overloaded"


class ProviderServerError(ProviderError):
    """HTTP 5xx from the provider."""

    kind = "server_error"


class ProviderConnectionError(ProviderError):
    """The connection to the provider failed or dropped."""

    kind = "connection"


class TerminalProviderError(ProviderError):
    """HTTP 400/401/403/404/413 (or a spend-limit 429): retrying cannot help."""

    kind = "terminal"
    retryable = False


class AnswerInterrupted(TierrouteError):
    """A streamed, committed answer failed after part of its text reached the caller.

    Nothing may replace text the caller was told is final, so the call fails; a retry of
    the whole request starts afresh.
    """


class AllTiersFailed(TierrouteError):
    """Every tier that could answer failed."""
