"""Every exception class maps to its documented gRPC status code, in one place; anything
unexpected reaches the caller as INTERNAL without details."""

from __future__ import annotations

import inspect

import grpc
import pytest
from grpc import aio

from tests.helpers import running_server
from tierroute import errors
from tierroute.api.status import WrappedHandlers, status_for
from tierroute.testing import FailingScorer
from tierroute.v1 import tierroute_pb2 as pb

EXPECTED = {
    errors.TierrouteError: grpc.StatusCode.INTERNAL,
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.QueryTooLong: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RequestTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.BudgetExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.TenantLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TenantBudgetExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TenantRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.CostCeilingReached: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RequestInProgress: grpc.StatusCode.ALREADY_EXISTS,
    errors.TenancyUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelLoadError: grpc.StatusCode.UNAVAILABLE,
    errors.ProviderError: grpc.StatusCode.UNAVAILABLE,
    errors.ProviderTimeout: grpc.StatusCode.UNAVAILABLE,
    errors.RateLimited: grpc.StatusCode.UNAVAILABLE,
    errors.ProviderOverloaded: grpc.StatusCode.UNAVAILABLE,
    errors.ProviderServerError: grpc.StatusCode.UNAVAILABLE,
    errors.ProviderConnectionError: grpc.StatusCode.UNAVAILABLE,
    errors.TerminalProviderError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AllTiersFailed: grpc.StatusCode.UNAVAILABLE,
    errors.AnswerInterrupted: grpc.StatusCode.UNAVAILABLE,
}


def _instance(kind: type[errors.TierrouteError]) -> errors.TierrouteError:
    if kind is errors.QueryTooLong:
        return errors.QueryTooLong(10, 5)
    if issubclass(kind, errors.TenantLimited):
        return kind("x", tenant="t", retry_after_s=None)
    return kind("x")


def test_every_exception_class_is_covered() -> None:
    """The table below names every class in the exception tree."""
    classes = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.TierrouteError)
    }
    assert classes == set(EXPECTED)


@pytest.mark.parametrize("kind", list(EXPECTED), ids=lambda k: k.__name__)
def test_status_for_each_class(kind: type[errors.TierrouteError]) -> None:
    """Each class maps to its status code."""
    assert status_for(_instance(kind)) is EXPECTED[kind]


async def test_unexpected_failure_is_internal_without_details() -> None:
    """An unexpected exception reaches the caller as INTERNAL with a generic message."""
    async with running_server(scorer=FailingScorer()) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="a", strategy=pb.STRATEGY_CLASSIFIER))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")


def test_request_refused_by_every_tier_is_not_retryable() -> None:
    """All tiers refusing the request itself maps to FAILED_PRECONDITION, not UNAVAILABLE."""
    failure = errors.AllTiersFailed("no tier could answer")
    failure.__cause__ = errors.TerminalProviderError("bad request", status_code=400)
    assert status_for(failure) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.AllTiersFailed("down")) is grpc.StatusCode.UNAVAILABLE


def test_wrapped_handlers_build_once_per_inner_handler() -> None:
    """A method's wrapping is built on its first call and reused while gRPC hands over the
    same inner handler; a different inner handler (an interceptor that builds one per call)
    is wrapped anew, so a reused wrapping never runs stale code."""
    built: list[str] = []

    def wrap(method: str, handler: object) -> object:
        built.append(method)
        return ("wrapped", handler)

    handlers = WrappedHandlers(wrap)  # type: ignore[arg-type]
    first, second = object(), object()
    a = handlers.get("/svc/A", first)  # type: ignore[arg-type]
    assert handlers.get("/svc/A", first) is a  # type: ignore[arg-type]
    assert built == ["/svc/A"]
    assert handlers.get("/svc/B", first) == ("wrapped", first)  # type: ignore[arg-type]
    assert handlers.get("/svc/A", second) == ("wrapped", second)  # type: ignore[arg-type]
    assert built == ["/svc/A", "/svc/B", "/svc/A"]
