"""The one place where tierroute's exceptions become gRPC status codes.

`ErrorMappingInterceptor` wraps every unary, server-streaming and bidirectional handler
that yields: request bytes that do not parse (a string that is not UTF-8, say) end the call
INVALID_ARGUMENT with the parser's reason; a `TierrouteError` aborts the call with its
mapped code and message (after any messages already streamed); anything unexpected is
logged with its traceback and the caller sees INTERNAL with a generic message, never a
stack trace.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from tierroute import errors

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
_STATUS: tuple[tuple[type[errors.TierrouteError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.BudgetExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.TenantLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CostCeilingReached, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RequestInProgress, grpc.StatusCode.ALREADY_EXISTS),
    (errors.TenancyUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.TerminalProviderError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ProviderError, grpc.StatusCode.UNAVAILABLE),
    (errors.AllTiersFailed, grpc.StatusCode.UNAVAILABLE),
    (errors.AnswerInterrupted, grpc.StatusCode.UNAVAILABLE),
    (errors.ModelLoadError, grpc.StatusCode.UNAVAILABLE),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.TierrouteError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: errors.TierrouteError) -> grpc.StatusCode:
    """The gRPC status code for one of tierroute's exceptions."""
    if isinstance(exc, errors.AllTiersFailed) and isinstance(
        exc.__cause__, errors.TerminalProviderError
    ):
        # Every tier refused the request itself (400, 413, ...): retrying cannot help, so
        # it must not look like UNAVAILABLE, which clients retry.
        return grpc.StatusCode.FAILED_PRECONDITION
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


INTERNAL_MESSAGE = "internal error; the server logged the details"

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamHandler = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
BidiHandler = Callable[[AsyncIterator[Any], aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

if TYPE_CHECKING:
    # The stubs make interceptors generic; at run time the class is not subscriptable.
    ServerInterceptor = aio.ServerInterceptor[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:
    ServerInterceptor = aio.ServerInterceptor
    MethodHandler = grpc.RpcMethodHandler


class WrappedHandlers:
    """Each method's wrapped handler, built on its first call and reused after.

    gRPC hands an interceptor the same inner handler object for a method on every call (the
    servicer's registered one, or the next interceptor's cached wrapping of it), so wrapping
    it per call only rebuilds the same closures. A wrapping is reused while the inner handler
    is that same object; one that changes (an interceptor that builds a new handler per
    call) is wrapped again. Only registered methods reach here, so the table is bounded.
    """

    def __init__(self, wrap: Callable[[str, MethodHandler], MethodHandler | None]) -> None:
        self._wrap = wrap
        self._built: dict[str, tuple[MethodHandler, MethodHandler | None]] = {}

    def get(self, method: str, handler: MethodHandler) -> MethodHandler | None:
        """The wrapping of `handler` for `method`, built once per inner handler."""
        built = self._built.get(method)
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self._wrap(method, handler)
        self._built[method] = (handler, wrapped)
        return wrapped


class UndecodableRequest:
    """Stands in for request bytes that do not parse, so the call ends INVALID_ARGUMENT."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        # The parser's own words (the message type, and e.g. "String field had bad UTF-8"):
        # they name no byte of the request.
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # gRPC turns a deserializer's exception into UNKNOWN and logs a traceback; bad bytes
    # are the caller's error, so they reach the handler as a marker instead.
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return UndecodableRequest(str(exc))

    return deserialize


def _refuse_undecodable(request: Any) -> None:
    if isinstance(request, UndecodableRequest):
        raise errors.InvalidRequest(
            f"the request is not a valid message for this method: {request.reason}"
        )


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # A client stream's messages, each refused as it arrives if it does not parse.
    async for request in requests:
        _refuse_undecodable(request)
        yield request


async def _abort(method: str, exc: Exception, context: aio.ServicerContext[Any, Any]) -> None:
    """End the call with the status `exc` maps to; never returns."""
    if isinstance(exc, errors.TierrouteError):
        code = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("%s failed", method)
            await context.abort(code, INTERNAL_MESSAGE)
        await context.abort(code, str(exc))
    # The caller never sees a traceback; the log keeps it.
    logger.exception("%s failed unexpectedly", method)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _wrap(method: str, behaviour: Handler) -> Handler:
    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            _refuse_undecodable(request)
            return await behaviour(request, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(method, exc, context)

    return guarded


def _wrap_stream(method: str, behaviour: StreamHandler) -> StreamHandler:
    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            _refuse_undecodable(request)
            async for response in behaviour(request, context):
                yield response
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(method, exc, context)

    return guarded


def _wrap_bidi(method: str, behaviour: BidiHandler) -> BidiHandler:
    async def guarded(
        requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(_decoded(requests), context):
                yield response
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(method, exc, context)

    return guarded


class ErrorMappingInterceptor(ServerInterceptor):
    """Maps tierroute exceptions to status codes for every unary-unary method and every
    server- or bidirectional-streaming method that yields (Envoy's `Process` among them)."""

    def __init__(self) -> None:
        self._handlers = WrappedHandlers(self._wrap_handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._handlers.get(handler_call_details.method, handler)  # type: ignore[return-value]

    @staticmethod
    def _wrap_handler(method: str, handler: MethodHandler) -> MethodHandler:
        if inspect.isasyncgenfunction(handler.unary_stream):
            # Streams that yield; those that write to the context (health's Watch) are
            # left as they are.
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if inspect.isasyncgenfunction(handler.stream_stream):
            # Envoy's external processor: each message of the client's stream is decoded
            # as it comes, so one that does not parse ends the call INVALID_ARGUMENT too.
            return grpc.stream_stream_rpc_method_handler(
                _wrap_bidi(method, handler.stream_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _wrap(method, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
