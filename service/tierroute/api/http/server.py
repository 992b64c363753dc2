"""uvicorn serving the HTTP edge inside the gRPC server's process and event loop.

The socket is bound first (`HttpServer.bind`), so that a port in use fails start-up with one
clear line before anything else starts; uvicorn then serves on it. The process's signals
stay `tierroute serve`'s: uvicorn's own handlers are not installed, and the server stops
when `TierRouteServer.stop` says so, letting requests in flight finish within the grace
period and cancelling those still running after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from tierroute.errors import ConfigError

logger = logging.getLogger(__name__)


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Binds a port, serves an ASGI app on it, and stops gracefully."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._server: _Embedded | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def bind(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (0: a free port), with SO_REUSEPORT when `reuse_port` (the
        workers of one group); ConfigError when that cannot be done."""
        try:
            self._socket = _listener(host, port, reuse_port=reuse_port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {reason}") from exc
        self.port = int(self._socket.getsockname()[1])
        return self.port

    def start(self, app: ASGIApp) -> None:
        """Serve `app` on the bound socket (connections made meanwhile wait in its backlog)."""
        assert self._socket is not None, "bind first"
        config = uvicorn.Config(
            app,
            lifespan="off",
            # httptools' C parser: h11 in pure Python was the door's largest cost per request.
            http="httptools",
            log_config=None,
            access_log=False,
            # The server's own headers are the app's business (none is added).
            server_header=False,
            date_header=True,
        )
        self._server = _Embedded(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="tierroute-http"
        )
        self._task.add_done_callback(_report)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish within `grace_s` (at least a second),
        then cancel them."""
        if self._server is not None and self._task is not None:
            # uvicorn counts whole seconds, and needs a moment to close even idle sockets.
            self._server.config.timeout_graceful_shutdown = max(1, math.ceil(grace_s))
            self._server.should_exit = True
            await asyncio.wait([self._task])
            self._server = self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket whose accepted connections send without Nagle's delay.

    uvicorn writes a response's head and body in two writes. With Nagle's algorithm on, the
    body waits for the client's delayed acknowledgement of the head: about 40 ms on every
    request of a kept-alive connection after the first. asyncio turns Nagle off on an
    accepted socket only when the socket's protocol says TCP, and an accepted socket takes
    its listener's protocol: `socket.create_server` leaves it 0, so the listener is made with
    IPPROTO_TCP here. TCP_NODELAY on the listener itself covers the same ground on Linux,
    which copies it to each accepted socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the HTTP server failed", exc_info=task.exception())
