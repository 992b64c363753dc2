"""Admission control: a bound on calls in flight, refused at once beyond it.

`AdmissionInterceptor` counts the unary calls that are running. A call that would take the
count past `server.max_in_flight` is refused immediately with RESOURCE_EXHAUSTED and a
message that asks for back-off, instead of waiting in an unbounded queue behind the others.
Health checking and reflection are neither counted nor refused, so probes keep working
while the server is full.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from tierroute.api.security import Behaviour, is_probe
from tierroute.api.status import MethodHandler, ServerInterceptor, status_for
from tierroute.errors import Overloaded

logger = logging.getLogger(__name__)


class AdmissionInterceptor(ServerInterceptor):
    """Counts calls in flight and refuses those beyond `limit` (0 = count, never refuse)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the in-flight limit must not be negative")
        self.limit = limit
        self._in_flight = 0
        self.refused = 0

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
        # Only unary calls are counted: every TierRouter method is unary, and the streaming
        # methods on this server are the exempt probes.
        if handler is None or handler.unary_unary is None or is_probe(method):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behaviour: Behaviour) -> Behaviour:
        async def admitted(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            # Check and increment with no await in between: on one event loop this is
            # atomic, so the bound holds without a lock.
            if self.limit and self._in_flight >= self.limit:
                self.refused += 1
                exc = Overloaded(
                    f"server at capacity ({self._in_flight} calls in flight); retry with back-off"
                )
                logger.debug("refused a call: %s in flight", self._in_flight)
                await context.abort(status_for(exc), str(exc))
            self._in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self._in_flight -= 1

        return admitted
