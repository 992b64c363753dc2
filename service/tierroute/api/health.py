"""Standard gRPC health checking, plus one service name per tier following its breaker."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

from tierroute.cascade import BreakerBoard
from tierroute.observability import BreakerState
from tierroute.v1 import tierroute_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TierRouter"].full_name


def tier_health_name(tier: str) -> str:
    """The health service name that reports `tier`'s circuit breaker."""
    return f"{SERVICE_NAME}/tier/{tier}"


# grpc_health ships no type information, so its servicer is Any to mypy.
class BreakerHealthServicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """Standard health checking, plus one service name per tier for its circuit breaker.

    `tier_health_name(tier)` is NOT_SERVING while that tier's breaker is open and SERVING
    otherwise (closed, or half-open and trying calls). The service's own status never
    follows a breaker: one provider being down does not stop tierroute serving.
    """

    def __init__(self) -> None:
        super().__init__()
        self._board: BreakerBoard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncs: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:  # noqa: N802
        """The stock Watch stream, ended (with OK) when the server closes its health service.

        Clients with client-side health checking hold a Watch stream open for as long as
        they are connected; without ending them, every shutdown would wait out the whole
        grace period for streams that will never finish on their own.
        """
        watch = asyncio.ensure_future(super().Watch(request, context))
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({watch, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, ended):
                task.cancel()
            await asyncio.gather(watch, ended, return_exceptions=True)
        error = watch.exception() if watch.done() and not watch.cancelled() else None
        if error is not None:
            raise error

    async def follow(self, board: BreakerBoard) -> None:
        """Publish `board`'s states now and after every transition."""
        self._board, self._loop = board, asyncio.get_running_loop()
        board.subscribe(self._changed)
        await self.sync()

    def _changed(self, tier: str, state: BreakerState) -> None:
        # Called on whichever thread moved the breaker; health is set on the server's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._spawn_sync)

    def _spawn_sync(self) -> None:
        if self._board is None:
            return
        task = asyncio.create_task(self.sync())
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def sync(self) -> None:
        """Set every tier's health status from its breaker's state now."""
        if self._board is None:
            return
        for tier, state in self._board.states().items():
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if state == "open"
                else health_pb2.HealthCheckResponse.SERVING
            )
            await self.set(tier_health_name(tier), status)

    async def Check(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        # An open breaker turns half-open when its cool-down passes, with no call to see it.
        await self.sync()
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return response

    async def close(self) -> None:
        """Stop following the breakers, report every tier NOT_SERVING, end Watch streams."""
        board, self._board, self._loop = self._board, None, None
        if self._syncs:
            await asyncio.wait(set(self._syncs))
        if board is not None:
            for tier in board.states():
                await self.set(tier_health_name(tier), health_pb2.HealthCheckResponse.NOT_SERVING)
        self._ended.set()
