"""The one place where tierroute's exceptions become Anthropic's HTTP errors.

Every refusal and failure of the HTTP endpoint is Anthropic's error JSON,
`{"type": "error", "error": {"type": ..., "message": ...}}`, under the status code Anthropic
uses for that kind of error, so that the official SDKs raise their own exception classes
and retry exactly what Anthropic would have them retry (429, 500, 529). A provider's error
that ended the request keeps its own kind: an upstream 429 is a 429 with its retry-after, an
upstream 529 a 529. Anything unexpected is logged with its traceback and becomes a 500 with a
generic message; the caller never sees a traceback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierroute import errors

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"


@dataclass(frozen=True)
class HttpError:
    """An error as the Messages API reports it: status, error type, message, retry-after."""

    status: int
    type: str
    message: str
    retry_after_s: float | None = None

    def body(self) -> dict[str, Any]:
        """The error JSON (also the data of a stream's `error` event)."""
        return {"type": "error", "error": {"type": self.type, "message": self.message}}

    def headers(self) -> Mapping[str, str]:
        """`retry-after` in whole seconds, when the error says when to retry."""
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(0, math.ceil(self.retry_after_s)))}


# Most specific first: the first matching class decides.
_KINDS: tuple[tuple[type[errors.TierrouteError], int, str], ...] = (
    (errors.QueryTooLong, 413, "request_too_large"),
    (errors.RequestTooLarge, 413, "request_too_large"),
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.NotFound, 404, "not_found_error"),
    (errors.Unauthenticated, 401, "authentication_error"),
    (errors.PermissionDenied, 403, "permission_error"),
    # Admission control: this server is at capacity, as Anthropic's 529 says of its own.
    (errors.Overloaded, 529, "overloaded_error"),
    # The server is draining for shutdown: another replica serves the retry.
    (errors.ShuttingDown, 529, "overloaded_error"),
    # The request's attempt budget went on failed provider calls: transient, retry later.
    (errors.BudgetExhausted, 529, "overloaded_error"),
    # A tenant's rate limit or spent budget: the caller's own limit, retry after it frees.
    (errors.TenantLimited, 429, "rate_limit_error"),
    (errors.CostCeilingReached, 400, "invalid_request_error"),
    (errors.RequestInProgress, 409, "invalid_request_error"),
    (errors.TenancyUnavailable, 529, "overloaded_error"),
    (errors.DeadlineExceeded, 504, "timeout_error"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.ProviderOverloaded, 529, "overloaded_error"),
    (errors.ProviderTimeout, 504, "timeout_error"),
    (errors.ProviderError, 500, "api_error"),
    # No tier could serve (breakers open): the service is unavailable for now.
    (errors.AllTiersFailed, 529, "overloaded_error"),
    (errors.AnswerInterrupted, 500, "api_error"),
    (errors.ModelLoadError, 500, "api_error"),
    (errors.ConfigError, 500, "api_error"),
)
# A provider's terminal refusal (HTTP 400/401/403/404/413) by its status code. The
# provider refusing the server's own credential (401, 403) is this server's fault, not the
# caller's, so it is an api_error, never an authentication_error the caller cannot mend.
_TERMINAL: Mapping[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    404: (404, "not_found_error"),
    413: (413, "request_too_large"),
}


def _retry_after(exc: errors.TierrouteError) -> float | None:
    if isinstance(exc, errors.RateLimited):
        return exc.retry_after
    if isinstance(exc, errors.TenantLimited):
        return exc.retry_after_s
    return None


def http_error(exc: BaseException) -> HttpError:
    """The Messages API error for `exc`."""
    if isinstance(exc, errors.AllTiersFailed) and isinstance(exc.__cause__, errors.ProviderError):
        # The last tier's own failure says what kind of trouble this is.
        last = http_error(exc.__cause__)
        return HttpError(last.status, last.type, str(exc), last.retry_after_s)
    if isinstance(exc, errors.TerminalProviderError):
        status, name = _TERMINAL.get(exc.status_code or 0, (500, "api_error"))
        return HttpError(status, name, str(exc))
    if isinstance(exc, errors.TierrouteError):
        for cls, code, name in _KINDS:
            if isinstance(exc, cls):
                return HttpError(code, name, str(exc), _retry_after(exc))
        logger.error("unmapped %s", type(exc).__name__, exc_info=exc)
        return HttpError(500, "api_error", INTERNAL_MESSAGE)
    logger.error("request failed unexpectedly", exc_info=exc)
    return HttpError(500, "api_error", INTERNAL_MESSAGE)
