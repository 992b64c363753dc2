"""Admission control: a bound on calls in flight, refused at once beyond it.

`AdmissionInterceptor` counts the unary calls and CascadeStream calls that are running (a
stream counts until its last event). A call that would take the count past
`server.max_in_flight` is refused immediately with RESOURCE_EXHAUSTED and a message that asks
for back-off, instead of waiting in an unbounded queue behind the others. Once the server
drains for shutdown, every new call is refused with UNAVAILABLE (ShuttingDown). Health checking
and reflection are neither counted nor refused, so probes keep working while the server is
full.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from tierroute.api.security import Behaviour, StreamBehaviour, is_probe
from tierroute.api.status import MethodHandler, ServerInterceptor, WrappedHandlers, status_for
from tierroute.errors import Overloaded, ShuttingDown

logger = logging.getLogger(__name__)


class AdmissionInterceptor(ServerInterceptor):
    """Counts calls in flight and refuses those beyond `limit` (0 = count, never refuse)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the in-flight limit must not be negative")
        self.limit = limit
        self._in_flight = 0
        self.refused = 0
        # Set when the server starts draining: new calls are refused with ShuttingDown
        # (UNAVAILABLE) while the listener stays open for the calls in flight.
        self.draining = False
        self._idle: asyncio.Event | None = None
        self._handlers = WrappedHandlers(self._wrap_handler)

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet finished."""
        return self._in_flight

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        # Probes (health, reflection) are neither counted nor refused.
        if handler is None or is_probe(method):
            return handler
        return self._handlers.get(method, handler)  # type: ignore[return-value]

    def _wrap_handler(self, method: str, handler: MethodHandler) -> MethodHandler:
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def enter(self) -> None:
        """Count one call in; Overloaded, counting nothing, when the server is at capacity.

        The gRPC calls come through the interceptor; the HTTP endpoint calls this and
        `leave` itself, so both transports share one bound.
        """
        # Check and increment with no await in between: on one event loop this is atomic,
        # so the bound holds without a lock.
        if self.draining:
            self.refused += 1
            raise ShuttingDown("the server is shutting down; retry on another replica")
        if self.limit and self._in_flight >= self.limit:
            self.refused += 1
            logger.debug("refused a call: %s in flight", self._in_flight)
            raise Overloaded(
                f"server at capacity ({self._in_flight} calls in flight); retry with back-off"
            )
        self._in_flight += 1

    def leave(self) -> None:
        """Count one call out (one that `enter` let in)."""
        self._in_flight -= 1
        if self._idle is not None and self._in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Refuse every new call from now on, and wait up to `timeout_s` for the calls in
        flight to finish."""
        self.draining = True
        self._idle = asyncio.Event()
        if self._in_flight == 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def _admit(self, context: aio.ServicerContext[Any, Any]) -> None:
        try:
            self.enter()
        except (Overloaded, ShuttingDown) as exc:
            await context.abort(status_for(exc), str(exc))

    def _wrap(self, behaviour: Behaviour) -> Behaviour:
        async def admitted(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await self._admit(context)
            try:
                return await behaviour(request, context)
            finally:
                self.leave()

        return admitted

    def _wrap_stream(self, behaviour: StreamBehaviour) -> StreamBehaviour:
        async def admitted(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await self._admit(context)
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                self.leave()

        return admitted
