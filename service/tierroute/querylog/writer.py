"""The query log's loss-free asynchronous writer, fed from the RPC hot path.

`submit` puts a record on a bounded in-memory queue and returns at once; a background task
writes the queue to the store in batches. Nothing accepted is dropped:

- queue full: the record is appended to the spool file instead (counted `queue_full` and
  `spilled`);
- database down (any StoreUnavailable): each batch is appended to the spool and fsynced,
  and the database is probed with exponential back-off;
- database back: the spool is replayed in file order, before anything newer is written;
- database refuses rows (StoreRejected): the batch is retried row by row and the refused
  rows are kept in `<spool>.rejected` (counted `rejected`);
- shutdown: `close` writes the queue to the database, or to the spool when the database
  is down or the time runs out; the spool is replayed at the next start.

Stores skip ids they already hold, so a batch written twice (a commit whose
acknowledgement was lost, a replay after a crash) is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from tierroute.querylog.factory import open_store
from tierroute.querylog.records import (
    SHADOW_TIER,
    FeedbackRecord,
    LogItem,
    QueryRecord,
    item_from_line,
    item_to_line,
)
from tierroute.querylog.spool import Spool
from tierroute.querylog.store import QueryLogError, Store, StoreRejected, StoreUnavailable
from tierroute.settings import QueryLogConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStats:
    """The writer's counters since it was created (records, not batches, unless noted)."""

    enqueued: int  # accepted onto the in-memory queue
    written: int  # stored from the queue
    spooled: int  # appended to the spool (outage, full queue, shutdown)
    replayed: int  # stored from the spool
    stored_batches: int  # batch writes that stored queued records (one transaction each)
    failed_batches: int  # batch writes that failed (unavailable or refused)
    queue_full: int  # submits that found the queue full
    spilled: int  # of those, records kept in the spool instead
    rejected: int  # refused by the database for good; kept in the rejected file
    lost: int  # could be kept nowhere (spool unwritable, or submitted after close)
    queue_depth: int
    spool_pending: bool
    database_up: bool


def scrub(
    record: QueryRecord, config: QueryLogConfig, *, keep_shadow_text: bool = False
) -> QueryRecord:
    """`record` without the text `config` does not keep (before it leaves the request)."""
    # An audit sample keeps its question and answer only while audit sampling is on.
    audit = record.answer_text is not None and config.audit_sample_rate > 0
    if record.answer_text is not None and not audit:
        record = dataclasses.replace(record, answer_text=None)
    # Shadow samples (records carrying SHADOW_TIER) keep their text while shadow is on.
    shadow = keep_shadow_text and SHADOW_TIER in record.metadata
    if record.query_text is not None and not (config.store_text or audit or shadow):
        record = dataclasses.replace(record, query_text=None)
    return record


class QueryLogWriter:
    """Batches query and feedback records into a store without blocking the caller.

    The writer owns its store: `close` closes it. `submit` and `submit_feedback` are safe
    from any thread; everything else runs on the event loop that called `start`.
    """

    def __init__(
        self, store: Store, config: QueryLogConfig, *, keep_shadow_text: bool = False
    ) -> None:
        self.store = store
        self._config = config
        # Shadow samples (records carrying SHADOW_TIER) keep their text while shadow is on.
        self._keep_shadow_text = keep_shadow_text
        self._spool = Spool(config.spool_path)
        self._queue: deque[LogItem] = deque()
        # Guards the queue, the recent-id set and the submit-side counters.
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._pumped = asyncio.Event()
        self._pump_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._migrated = False
        self._down = False
        self._backoff = 0.0
        self._next_probe = 0.0
        self._in_flight = 0
        # Spool appends under way; close waits for them before closing the file.
        self._spooling: set[asyncio.Future[None]] = set()
        # Request ids not yet known to be stored, so Feedback can find them before a flush.
        self._recent: dict[str, str] = {}
        self._recent_cap = max(1024, 2 * config.queue_size + 2 * config.batch_size)
        self._counts = dict.fromkeys(
            (
                "enqueued", "written", "spooled", "replayed", "stored_batches",
                "failed_batches", "queue_full", "spilled", "rejected", "lost",
            ),
            0,
        )  # fmt: skip

    @classmethod
    def from_config(
        cls, config: QueryLogConfig, *, keep_shadow_text: bool = False
    ) -> QueryLogWriter:
        """A writer over the store `config.url` names."""
        store = open_store(config.url.get(), connect_timeout_s=config.connect_timeout_s)
        return cls(store, config, keep_shadow_text=keep_shadow_text)

    # -- the hot path -------------------------------------------------------------------------

    def submit(self, record: QueryRecord) -> bool:
        """Queue a query record; never blocks on the database, never raises.

        True when the record is kept (queued, or spooled because the queue is full);
        False only when it could be kept nowhere, which is counted as `lost` and logged.
        """
        return self._submit(scrub(record, self._config, keep_shadow_text=self._keep_shadow_text))

    def submit_feedback(self, feedback: FeedbackRecord) -> bool:
        """Queue a feedback record; same contract as `submit`."""
        return self._submit(feedback)

    def _submit(self, item: LogItem) -> bool:
        try:
            with self._lock:
                if self._closed:
                    self._counts["lost"] += 1
                    logger.error("query log writer is closed; a record was not kept")
                    return False
                if isinstance(item, QueryRecord):
                    self._remember(item.request_id, item.tenant_id)
                full = len(self._queue) >= self._config.queue_size
                if full:
                    self._counts["queue_full"] += 1
                else:
                    self._queue.append(item)
                    self._counts["enqueued"] += 1
                depth = len(self._queue)
            if full and not self._spill(item):
                return False
            if full or depth >= self._config.batch_size:
                self._wake_flusher()
        except Exception:
            # The request must never fail because of its log record; say why loudly.
            logger.exception("query log submit failed")
            with self._lock:
                self._counts["lost"] += 1
            return False
        return True

    def _spill(self, item: LogItem) -> bool:
        # No fsync on the request path; the flusher fsyncs the spool on its next pass.
        try:
            if not self._spool.is_open:
                self._spool.open()
            self._spool.append([item_to_line(item)], sync=False)
        except OSError:
            logger.exception("query log queue full and spool %s unwritable", self._spool.path)
            with self._lock:
                self._counts["lost"] += 1
            return False
        with self._lock:
            self._counts["spooled"] += 1
            self._counts["spilled"] += 1
        return True

    def _remember(self, request_id: str, tenant_id: str) -> None:
        self._recent[request_id] = tenant_id
        if len(self._recent) > self._recent_cap:
            del self._recent[next(iter(self._recent))]

    def _wake_flusher(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start the background flusher, which migrates the store first.

        Never waits for the database and never fails because it is down (records are
        spooled until it is back); ConfigError when another process holds the spool.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await asyncio.to_thread(self._spool.open)
        if self._spool.pending():
            logger.info("query log spool %s holds records from an earlier run", self._spool.path)
        self._task = asyncio.create_task(self._run(), name="querylog-writer")
        self._wake.set()

    async def close(self, timeout_s: float) -> None:
        """Drain the queue to the database, or to the spool; then close the store.

        Within `timeout_s` the writer replays the spool and writes the queue; whatever is
        still in memory after that goes to the spool (fsynced), so nothing is lost.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                if self._task is not None:
                    await self._task
                await self._pump(probe_now=True)
        except TimeoutError:
            logger.warning("query log did not drain within %.1f s; spooling the rest", timeout_s)
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            if self._spooling:
                await asyncio.gather(*self._spooling, return_exceptions=True)
            with self._lock:
                self._closed = True
                rest = list(self._queue)
                self._queue.clear()
            if rest:
                self._spool_now(rest)
            self._spool.close()
            await self.store.aclose()
        logger.info("query log writer closed: %s", self.stats())

    async def flush(self) -> None:
        """Store (or spool) everything submitted so far; probe the database now."""
        await self._pump(probe_now=True)

    async def persist(self) -> None:
        """Store or spool (fsynced) everything submitted so far, honouring the probe back-off.

        Unlike `flush`, a database known to be down is not probed again before its back-off
        ends: the queue goes to the spool at once. The writer process acknowledges records
        to the serving processes after this returns.
        """
        await self._pump(probe_now=False)

    async def keep_rejected(self, lines: list[str]) -> None:
        """Keep lines that are not records at all in the rejected file (counted `rejected`)."""
        await self._reject(lines)

    async def wait_drained(self) -> None:
        """Wait until the queue and the spool are empty: everything submitted is stored."""
        while not self._drained():
            self._pumped.clear()
            await self._pumped.wait()

    def _drained(self) -> bool:
        with self._lock:
            empty = not self._queue and self._in_flight == 0
        return empty and not self._spool.pending()

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = dict(self._counts)
            depth = len(self._queue)
        return WriterStats(
            **counts,
            queue_depth=depth,
            spool_pending=self._spool.pending(),
            database_up=not self._down,
        )

    async def has_request(
        self, request_id: str, *, tenant_id: str | None = None, timeout_s: float = 1.0
    ) -> bool:
        """Whether a Route or Cascade call with this id was logged (for Feedback's NOT_FOUND).

        With `tenant_id`, only a call of that tenant counts, so that one tenant can neither
        rate nor probe for another's request ids. False only when the id is in none of this
        writer's unflushed records, the spool is empty and the store answers within
        `timeout_s` that it does not hold it. While the store is down, slow or failing, the
        answer is True: accepting feedback beats a false NOT_FOUND.
        """
        with self._lock:
            if request_id in self._recent:
                return tenant_id is None or self._recent[request_id] == tenant_id
        if self._down:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                if await self.store.has_request(request_id, tenant_id):
                    return True
        except (QueryLogError, TimeoutError):
            return True
        return self._spool.pending()

    # -- the background flusher ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._pump(probe_now=False)
            except Exception:
                # A bug in one pass must not stop logging for the life of the process;
                # the records stay queued or spooled for the next pass.
                logger.exception("query log flush pass failed")

    async def _pump(self, *, probe_now: bool) -> None:
        async with self._pump_lock:
            try:
                await self._pump_locked(probe_now=probe_now)
            finally:
                self._pumped.set()

    async def _pump_locked(self, *, probe_now: bool) -> None:
        if self._spool.needs_sync:
            await asyncio.to_thread(self._spool.sync)
        if self._down and not probe_now and time.monotonic() < self._next_probe:
            await self._spool_queue()
            return
        if not await self._ensure_migrated():
            await self._spool_queue()
            return
        while self._spool.is_open and self._spool.pending():
            if not await self._replay_batch():
                await self._spool_queue()
                return
        # What is queued now, not what comes while it is written: a pass that chased the
        # queue's tail would store records arriving one by one one per transaction. Later
        # records wait for the next pass (the flush interval, a full batch or a persist).
        with self._lock:
            due = len(self._queue)
        while due > 0:
            batch = self._take_batch(due)
            if not batch:
                return
            due -= len(batch)
            try:
                stored = await self._write_items(batch, from_spool=False)
            finally:
                with self._lock:
                    self._in_flight -= len(batch)
            if not stored:
                await self._spool_queue()
                return

    def _take_batch(self, most: int | None = None) -> list[LogItem]:
        with self._lock:
            n = min(self._config.batch_size, len(self._queue))
            if most is not None:
                n = min(n, most)
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight += n
        return batch

    async def _ensure_migrated(self) -> bool:
        if self._migrated:
            return True
        try:
            await self.store.migrate()
        except QueryLogError as exc:
            self._mark_down(exc)
            return False
        self._migrated = True
        return True

    async def _write_items(self, items: list[LogItem], *, from_spool: bool) -> bool:
        """Store `items`; on an outage, spool them (unless they came from it) and say False."""
        queries = [i for i in items if isinstance(i, QueryRecord)]
        feedback = [i for i in items if isinstance(i, FeedbackRecord)]
        try:
            await self.store.write_batch(queries, feedback)
        except StoreUnavailable as exc:
            self._counts["failed_batches"] += 1
            self._mark_down(exc)
            if not from_spool:
                await self._spool_items(items)
            return False
        except StoreRejected:
            self._counts["failed_batches"] += 1
            return await self._write_one_by_one(items, from_spool=from_spool)
        except Exception:
            # Not a store error: a bug or an unforeseen value. Treat the batch as refused
            # so one bad record cannot block the spool forever; it is kept, not dropped.
            logger.exception("query log store failed unexpectedly on a batch")
            self._counts["failed_batches"] += 1
            return await self._write_one_by_one(items, from_spool=from_spool)
        except BaseException:
            # Cancelled (shutdown ran out of time): the batch may or may not be stored;
            # keep it in the spool, a second copy is skipped on replay.
            if not from_spool:
                self._spool_now(items)
            raise
        self._mark_up()
        if not from_spool:
            self._counts["written"] += len(items)
            self._counts["stored_batches"] += 1
        return True

    async def _write_one_by_one(self, items: list[LogItem], *, from_spool: bool) -> bool:
        refused: list[str] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, QueryRecord):
                    await self.store.write_batch([item], [])
                else:
                    await self.store.write_batch([], [item])
            except StoreRejected:
                refused.append(item_to_line(item))
            except StoreUnavailable as exc:
                # Before the catch-all: an outage mid-way spools the rest, it rejects nothing.
                self._mark_down(exc)
                if not from_spool:
                    await self._spool_items(items[index:])
                await self._reject(refused)
                return False
            except Exception:
                logger.exception("query log store failed unexpectedly on one record")
                refused.append(item_to_line(item))
            else:
                if not from_spool:
                    self._counts["written"] += 1
        await self._reject(refused)
        self._mark_up()
        return True

    async def _reject(self, lines: list[str]) -> None:
        if not lines:
            return
        logger.error(
            "query log database refused %s records; kept in %s",
            len(lines),
            self._spool.rejected_path,
        )
        await asyncio.to_thread(self._spool.reject, lines)
        self._counts["rejected"] += len(lines)

    async def _replay_batch(self) -> bool:
        lines, offset = await asyncio.to_thread(self._spool.read, self._config.batch_size)
        items: list[LogItem] = []
        unreadable: list[str] = []
        for raw in lines:
            text = raw.decode("utf-8", "replace")
            try:
                items.append(item_from_line(text))
            except (ValueError, KeyError, TypeError):
                unreadable.append(text)
        await self._reject(unreadable)
        rejected_before = self._counts["rejected"]
        if items and not await self._write_items(items, from_spool=True):
            return False
        await asyncio.to_thread(self._spool.consume, offset)
        self._counts["replayed"] += len(items) - (self._counts["rejected"] - rejected_before)
        return True

    async def _spool_queue(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            try:
                await self._spool_items(batch)
            finally:
                with self._lock:
                    self._in_flight -= len(batch)

    async def _spool_items(self, items: list[LogItem]) -> None:
        # Shielded: once started, the append finishes even if shutdown cancels us, and
        # close waits for it before it closes the file.
        append = asyncio.ensure_future(asyncio.to_thread(self._spool_now, items))
        self._spooling.add(append)
        append.add_done_callback(self._spooling.discard)
        await asyncio.shield(append)

    def _spool_now(self, items: list[LogItem]) -> None:
        try:
            if not self._spool.is_open:
                self._spool.open()
            self._spool.append([item_to_line(i) for i in items], sync=True)
        except OSError:
            logger.exception("query log spool %s unwritable; records lost", self._spool.path)
            with self._lock:
                self._counts["lost"] += len(items)
            return
        with self._lock:
            self._counts["spooled"] += len(items)

    def _mark_down(self, exc: QueryLogError) -> None:
        if not self._down:
            logger.warning("query log database unavailable, spooling: %s", exc)
        self._down = True
        self._backoff = min(
            max(self._backoff * 2, self._config.retry_initial_s), self._config.retry_max_s
        )
        self._next_probe = time.monotonic() + self._backoff

    def _mark_up(self) -> None:
        if self._down:
            logger.info("query log database %s is back", self.store.display_url)
        self._down = False
        self._backoff = 0.0
