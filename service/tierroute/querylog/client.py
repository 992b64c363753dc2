"""A serving process's side of the writer process (`querylog.process`): cheap, loss-free sends.

`submit` encodes the record and writes one line to the writer's Unix socket from the event
loop; no thread of this process touches the database or the spool on the hot path. Nothing
accepted is dropped:

- every record stays in a bounded window until the writer acknowledges it as durable;
- window full (the writer is slow, or down): the record is appended to this process's own
  spool file instead (counted `spilled`), fsynced by a background pass;
- writer process gone (crashed, restarting): the client reconnects with back-off and sends
  the unacknowledged window again, then its spool; the store skips ids it holds, so a
  record sent twice is stored once;
- shutdown: `close` waits up to `close_timeout_s` for the acknowledgements, then appends
  what is still unacknowledged to its spool (fsynced); the next client on that spool path
  (the same worker slot) sends it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierroute.querylog.records import FeedbackRecord, LogItem, QueryRecord, item_to_line
from tierroute.querylog.spool import Spool
from tierroute.querylog.writer import scrub
from tierroute.settings import QueryLogConfig

logger = logging.getLogger(__name__)

_RECONNECT_MAX_S = 1.0


@dataclass(frozen=True)
class ClientStats:
    """The client's counters since it was created (records)."""

    submitted: int  # accepted by submit
    acknowledged: int  # durable in the writer process
    spilled: int  # appended to this process's spool (window full, writer down, shutdown)
    replayed: int  # sent on from this process's spool
    resent: int  # sent again after the writer process restarted
    lost: int  # could be kept nowhere (spool unwritable, or submitted after close)
    window: int  # sent, not yet acknowledged
    spool_pending: bool
    connected: bool


class _Wire(asyncio.Protocol):
    def __init__(self, client: QueryLogClient) -> None:
        self._client = client
        self._rest = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self._client._received(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._client._lost(self)


class QueryLogClient:
    """Sends query and feedback records to the writer process at `address`.

    Same surface as `QueryLogWriter` for the servicer (`submit`, `submit_feedback`,
    `has_request`) and the server (`start`, `close`). `submit*` are safe from any thread.
    """

    def __init__(
        self,
        config: QueryLogConfig,
        address: Path,
        *,
        spool_path: Path,
        keep_shadow_text: bool = False,
    ) -> None:
        self._config = config
        self._keep_shadow_text = keep_shadow_text
        self.address = address
        self._spool = Spool(spool_path)
        self._lock = threading.Lock()
        # (seq, frame, spool offset after the line when it came from the spool)
        self._window: deque[tuple[int, bytes, int | None]] = deque()
        self._seq = 0
        self._spool_sent = 0  # offset up to which spool lines are in the window
        self._transport: asyncio.Transport | None = None
        # Frames submitted within one send delay, written together (_write_outbox).
        self._outbox: list[bytes] = []
        self._wire: _Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._asks: dict[bytes, asyncio.Future[bytes]] = {}
        self._ask_ids = 0
        self._acked = asyncio.Event()
        self._closed = False
        self._closing = False
        self._recent: dict[str, str] = {}
        self._recent_cap = max(1024, 2 * config.queue_size)
        self._counts = dict.fromkeys(
            ("submitted", "acknowledged", "spilled", "replayed", "resent", "lost"), 0
        )

    # -- the hot path -------------------------------------------------------------------------

    def submit(self, record: QueryRecord) -> bool:
        """Send a query record; never blocks, never raises. False only when it is lost."""
        return self._submit(scrub(record, self._config, keep_shadow_text=self._keep_shadow_text))

    def submit_feedback(self, feedback: FeedbackRecord) -> bool:
        """Send a feedback record; same contract as `submit`."""
        return self._submit(feedback)

    def _submit(self, item: LogItem) -> bool:
        try:
            line = item_to_line(item)
            with self._lock:
                if self._closed:
                    self._counts["lost"] += 1
                    logger.error("query log client is closed; a record was not kept")
                    return False
                if isinstance(item, QueryRecord):
                    self._remember(item.request_id, item.tenant_id)
                self._counts["submitted"] += 1
                if len(self._window) >= self._config.queue_size or self._spool.pending():
                    # Behind the spool, not beside it: what waits there goes first.
                    return self._spill([line])
                self._seq += 1
                frame = b"P\t%d\t%s\n" % (self._seq, line.encode("utf-8", "surrogatepass"))
                self._window.append((self._seq, frame, None))
                # Frames of one send delay leave in one write: with many calls in flight,
                # one system call (and one wake-up of the writer process) for several
                # records. Queued under the lock that numbered them, so they leave in
                # sequence order whichever thread submitted them.
                first = False
                if self._transport is not None:
                    self._outbox.append(frame)
                    first = len(self._outbox) == 1
            if first:
                self._schedule_outbox()
        except Exception:
            # The request must never fail because of its log record; say why loudly.
            logger.exception("query log submit failed")
            with self._lock:
                self._counts["lost"] += 1
            return False
        return True

    def _schedule_outbox(self) -> None:
        """Write the outbox after `send_delay_s` (at the end of the loop turn for 0)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._write_later(loop)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write_later, loop)

    def _write_later(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = self._config.send_delay_s
        if delay > 0:
            loop.call_later(delay, self._write_outbox)
        else:
            loop.call_soon(self._write_outbox)

    def _write_outbox(self) -> None:
        """Write the frames queued since the last write (on the loop thread)."""
        with self._lock:
            frames, self._outbox = self._outbox, []
            transport = self._transport
        # Without a connection the frames wait in the window; the reconnection resends them.
        if frames and transport is not None and not transport.is_closing():
            transport.write(b"".join(frames))

    def _spill(self, lines: list[str], *, sync: bool = False) -> bool:
        # Under self._lock (or at close). No fsync on the request path: the sync pass does it.
        try:
            if not self._spool.is_open:
                self._spool.open()
            self._spool.append(lines, sync=sync)
        except OSError:
            logger.exception("query log spool %s unwritable; records lost", self._spool.path)
            self._counts["lost"] += len(lines)
            return False
        self._counts["spilled"] += len(lines)
        return True

    def _remember(self, request_id: str, tenant_id: str) -> None:
        self._recent[request_id] = tenant_id
        if len(self._recent) > self._recent_cap:
            del self._recent[next(iter(self._recent))]

    # -- the wire ---------------------------------------------------------------------------------

    def _received(self, line: bytes) -> None:
        kind, _, rest = line.partition(b"\t")
        if kind == b"A":
            self._acknowledge(int(rest))
        elif kind == b"R":
            ident, _, answer = rest.partition(b"\t")
            future = self._asks.pop(ident, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def _acknowledge(self, seq: int) -> None:
        consumed: int | None = None
        with self._lock:
            while self._window and self._window[0][0] <= seq:
                _, _, offset = self._window.popleft()
                self._counts["acknowledged"] += 1
                if offset is not None:
                    consumed = offset
                    self._counts["replayed"] += 1
        if consumed is not None:
            with self._lock:
                self._spool.consume(consumed)
                if not self._spool.pending():
                    self._spool_sent = 0
        self._send_spooled()
        self._acked.set()

    def _send_spooled(self) -> None:
        """Move spooled lines into the window while it has room and the writer is there."""
        transport = self._transport
        if transport is None or not self._spool.is_open or not self._spool.pending():
            return
        with self._lock:
            room = self._config.queue_size - len(self._window)
            if room < max(1, self._config.queue_size // 2):
                return
            lines, offset = self._spool.read(min(room, self._config.batch_size), self._spool_sent)
            if not lines:
                return
            frames = []
            end = self._spool_sent
            for raw in lines:
                end += len(raw) + 1
                self._seq += 1
                frame = b"P\t%d\t%s\n" % (self._seq, raw)
                self._window.append((self._seq, frame, end))
                frames.append(frame)
            self._spool_sent = offset
        self._write_outbox()  # the window's order is the wire's order
        transport.write(b"".join(frames))

    def _lost(self, wire: _Wire) -> None:
        if wire is not self._wire:
            return
        self._transport = self._wire = None
        for future in self._asks.values():
            if not future.done():
                future.set_result(b"")
        self._asks.clear()
        self._acked.set()
        if not self._closed:
            logger.warning("query log writer process connection lost; reconnecting")
            self._spawn(self._connect_loop())

    async def _connect_loop(self) -> None:
        delay = self._config.retry_initial_s
        while not self._closed and self._transport is None:
            if await self._connect():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _connect(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            transport, wire = await loop.create_unix_connection(
                lambda: _Wire(self), str(self.address)
            )
        except OSError:
            return False
        with self._lock:
            self._transport, self._wire = transport, wire
            frames = [frame for _, frame, _ in self._window]
            # Lines of the spool that were in flight are in the window: they go again.
            self._counts["resent"] += len(frames)
            # The window holds what the outbox held: it goes once, from the window.
            self._outbox = []
        if frames:
            transport.write(b"".join(frames))
        self._send_spooled()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open this process's spool and connect; never fails because the writer is down."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await asyncio.to_thread(self._spool.open)
        if self._spool.pending():
            logger.info("query log spool %s holds records from an earlier run", self._spool.path)
        if not await self._connect():
            logger.warning("query log writer process not reachable at %s yet", self.address)
            self._spawn(self._connect_loop())
        self._spawn(self._sync_loop())

    async def _sync_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._config.flush_interval_s)
            if self._spool.needs_sync:
                await asyncio.to_thread(self._spool.sync)
            self._send_spooled()

    async def close(self, timeout_s: float) -> None:
        """Wait for the acknowledgements; spool (fsynced) whatever is still unacknowledged."""
        if self._closed:
            return
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wait_settled()
        with self._lock:
            self._closed = True
            rest = [
                frame.split(b"\t", 2)[2][:-1].decode("utf-8", "surrogatepass")
                for _, frame, offset in self._window
                if offset is None  # spool lines not acknowledged are still in the spool
            ]
            self._window.clear()
            if rest:
                logger.warning(
                    "query log writer did not acknowledge %s records; spooled", len(rest)
                )
                self._spill(rest, sync=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        transport, wire = self._transport, self._wire
        self._transport = self._wire = None
        if transport is not None and wire is not None:
            transport.close()
            # Closed for real (not just scheduled) before close returns.
            await wire.closed
        self._spool.close()
        logger.info("query log client closed: %s", self.stats())

    async def _wait_settled(self) -> None:
        """Until the window and the spool are empty (everything is durable in the writer)."""
        while True:
            self._acked.clear()
            with self._lock:
                settled = not self._window and not self._spool.pending()
            if settled:
                return
            if self._transport is None:
                # The writer process is restarting: wait for the reconnection.
                await asyncio.sleep(self._config.retry_initial_s)
                continue
            self._send_spooled()
            await self._acked.wait()

    async def flush(self) -> None:
        """Until everything sent is durable in the writer; then the writer flushes (probes)."""
        await self._wait_settled()
        await self._ask(b"F")

    async def wait_drained(self) -> None:
        """Until everything submitted is stored in the database."""
        await self._wait_settled()
        await self._ask(b"D")

    async def writer_stats(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The writer process's counters (`WriterStats` as a dict); None when it is not
        connected or does not answer within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._ask(b"S")
        except TimeoutError:
            return None
        if not answer:
            return None
        stats: dict[str, Any] = json.loads(answer)
        return stats

    async def has_request(
        self, request_id: str, *, tenant_id: str | None = None, timeout_s: float = 1.0
    ) -> bool:
        """Whether a call with this id was logged (QueryLogWriter.has_request's contract,
        answered by the writer process); True when the writer cannot answer in time."""
        with self._lock:
            if request_id in self._recent:
                return tenant_id is None or self._recent[request_id] == tenant_id
        body = json.dumps({"request_id": request_id, "tenant_id": tenant_id}).encode()
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._ask(b"H", body)
        except TimeoutError:
            return True
        return answer != b"0"

    async def _ask(self, kind: bytes, body: bytes = b"") -> bytes:
        transport = self._transport
        if transport is None:
            return b""
        self._ask_ids += 1
        ident = b"%d" % self._ask_ids
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._asks[ident] = future
        self._write_outbox()
        transport.write(b"%s\t%s\t%s\n" % (kind, ident, body))
        try:
            return await future
        finally:
            self._asks.pop(ident, None)

    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            window = len(self._window)
        return ClientStats(
            **counts,
            window=window,
            spool_pending=self._spool.pending(),
            connected=self._transport is not None,
        )


def worker_spool_path(config: QueryLogConfig, slot: int) -> Path:
    """The spool file of serving process `slot` (stable across its restarts)."""
    path = config.spool_path
    return path.with_name(f"{path.stem}.worker{slot}{path.suffix}")


__all__ = ["ClientStats", "QueryLogClient", "worker_spool_path"]
