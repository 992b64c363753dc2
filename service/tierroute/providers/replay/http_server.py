"""The replay backend's HTTP server: Anthropic's Messages API on loopback, stdlib only.

One thread per connection (`ThreadingHTTPServer`, HTTP/1.1 keep-alive). Simulated latency
and held connections wait on the client socket and a shutdown pipe together, so a client
that goes away (a cancelled speculative call) frees its thread at once, and `stop()` never
waits for a sleeping handler.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tierroute.outcomes import default_data_path
from tierroute.providers.replay.messages import ReplayEngine, Reply, error_body
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.settings import ProbeConfig, ReplayConfig, Settings, TierConfig

logger = logging.getLogger(__name__)

# Requests larger than this are refused with 413 before their body is read.
MAX_BODY_BYTES = 32 * 1024 * 1024
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class ReplayStats:
    """Counters of what the server did, for tests and the operator."""

    requests: int = 0
    in_flight: int = 0
    # Requests whose client left before the reply (cancelled calls, client timeouts).
    disconnected: int = 0
    by_kind: Mapping[str, int] = field(default_factory=dict)
    by_status: Mapping[int, int] = field(default_factory=dict)


class _Tracker:
    """Thread-safe counters with a condition to wait on, instead of sleeping in tests."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests = 0
        self._in_flight = 0
        self._disconnected = 0
        self._kinds: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()

    def started(self) -> None:
        with self._cond:
            self._requests += 1
            self._in_flight += 1
            self._cond.notify_all()

    def finished(self, kind: str, status: int | None, *, disconnected: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            self._kinds[kind] += 1
            if status is not None:
                self._statuses[status] += 1
            if disconnected:
                self._disconnected += 1
            self._cond.notify_all()

    def snapshot(self) -> ReplayStats:
        with self._cond:
            return ReplayStats(
                self._requests,
                self._in_flight,
                self._disconnected,
                dict(self._kinds),
                dict(self._statuses),
            )

    def wait_for(self, predicate: Callable[[ReplayStats], bool], timeout: float) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self.snapshot()), timeout))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # added about 40 ms to every reply.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes to stderr; route through logging, request line only.
        logger.debug("replay %s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/healthz", "/"):
            self._send(200, {"status": "ok"}, {})
        else:
            self._send(404, error_body("not_found_error", f"Not found: {self.path}", ""), {})

    def do_POST(self) -> None:
        tracker = self.server.tracker
        tracker.started()
        kind, status, disconnected = "error", None, False
        try:
            kind, status, disconnected = self._serve_post()
        except _DISCONNECTS:
            self.close_connection = True
            disconnected = True
        finally:
            tracker.finished(kind, status, disconnected=disconnected)

    def _serve_post(self) -> tuple[str, int | None, bool]:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            body = error_body("invalid_request_error", "bad content-length", "")
            self._send(400, body, {})
            return "error", 400, False
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            body = error_body("request_too_large", "Request exceeds the maximum size.", "")
            self._send(413, body, {})
            return "error", 413, False
        raw = self.rfile.read(length)
        reply = self.server.engine.handle(self.path, raw, dict(self.headers.items()))
        return self._deliver(reply)

    def _deliver(self, reply: Reply) -> tuple[str, int | None, bool]:
        """Answer as `reply` says: (kind, status sent, whether the client left first)."""
        if reply.action == "drop":
            self._drop()
            return reply.kind, None, False
        if reply.action == "hold":
            gone = not self._wait(self.server.config.timeout_hold_s)
            self._drop()
            return reply.kind, None, gone
        if reply.events:
            return reply.kind, reply.status, not self._stream(reply)
        if reply.delay_s > 0 and not self._wait(reply.delay_s):
            self.close_connection = True
            return reply.kind, None, True
        self._send(reply.status, reply.body, reply.headers)
        return reply.kind, reply.status, False

    def _send(
        self, status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, reply: Reply) -> bool:
        """Send a streamed reply's events, each after its wait, as a chunked SSE body.

        False as soon as the client disconnects or the server stops (the rest is not sent).
        """
        self.send_response(reply.status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event in reply.events:
            if event.delay_s > 0 and not self._wait(event.delay_s):
                self.close_connection = True
                return False
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        return True

    def _drop(self) -> None:
        # Close without a response, as a crashed or overloaded upstream would.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            logger.debug("replay: connection already closed")

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client disconnects or the server stops."""
        deadline = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ, "client")
            selector.register(self.server.wakeup_fd, selectors.EVENT_READ, "stop")
            while (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    if key.data == "stop":
                        return False
                    try:
                        peeked = self.connection.recv(1, socket.MSG_PEEK)
                    except OSError:
                        return False
                    if not peeked:
                        return False
                    # The client sent more bytes while waiting (pipelining); it is still there.
                    selector.unregister(self.connection)
        return True


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads are joined on close; stop() first unblocks every one of them.
    daemon_threads = False
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], engine: ReplayEngine, config: ReplayConfig
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.engine = engine
        self.config = config
        self.tracker = _Tracker()
        self.wakeup_fd, self._wakeup_write = os.pipe()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client may vanish at any point (a cancelled call); that is routine, not an error.
        if isinstance(sys.exc_info()[1], _DISCONNECTS):
            logger.debug("replay: client %s disconnected", client_address)
            return
        # Anything else is unexpected: log it once, with its cause.
        logger.exception("replay: unexpected error serving %s", client_address)

    def wake_all(self) -> None:
        """Release every waiting handler and unblock every idle keep-alive connection."""
        os.write(self._wakeup_write, b"x")
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                logger.debug("replay: connection already closed at stop")

    def server_close(self) -> None:
        super().server_close()
        os.close(self.wakeup_fd)
        os.close(self._wakeup_write)


class ReplayServer:
    """A local Anthropic Messages API serving recorded answers; see docs/replay.md."""

    def __init__(
        self,
        store: ReplayStore,
        tiers: Sequence[TierConfig],
        config: ReplayConfig,
        probes: Sequence[ProbeConfig] = (),
    ) -> None:
        self._engine = ReplayEngine(store, tiers, config, probes)
        self._config = config
        self._store = store
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> ReplayServer:
        """Load `settings.replay.data`, else the default data file, else serve synthetic only."""
        path: Path | None = settings.replay.data
        if path is None:
            candidate = default_data_path(os.environ if environ is None else environ)
            path = candidate if candidate.is_file() else None
        if path is None:
            logger.warning("no replay data found: the replay backend serves synthetic answers")
            store = ReplayStore()
        else:
            store = ReplayStore.load(path)
        return cls(store, settings.tiers, settings.replay, settings.probes)

    @property
    def store(self) -> ReplayStore:
        """The recorded answers served."""
        return self._store

    @property
    def base_url(self) -> str:
        """The URL to give the Anthropic SDK, e.g. "http://127.0.0.1:8765"."""
        if self._httpd is None:
            raise RuntimeError("the replay server is not started")
        host, port = self._httpd.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        """Bind (port 0 picks a free port) and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("the replay server is already started")
        self._httpd = _HTTPServer(
            (self._config.host, self._config.port), self._engine, self._config
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="replay-server",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "replay server on %s serving %s records (trio %s, time scale %s)",
            self.base_url,
            len(self._store),
            self._config.trio,
            self._config.time_scale,
        )

    def stop(self) -> None:
        """Stop serving, end every open connection and join every handler thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.wake_all()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        logger.info("replay server stopped")

    def stats(self) -> ReplayStats:
        """A snapshot of the server's counters."""
        if self._httpd is None:
            return ReplayStats()
        return self._httpd.tracker.snapshot()

    def wait_for(self, predicate: Callable[[ReplayStats], bool], timeout: float = 30.0) -> bool:
        """Block until `predicate(stats())` holds; False when `timeout` passes first."""
        if self._httpd is None:
            raise RuntimeError("the replay server is not started")
        return self._httpd.tracker.wait_for(predicate, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
