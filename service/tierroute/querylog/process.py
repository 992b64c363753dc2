"""The query log's writer in a process of its own, so that serving processes never share a
GIL with the database driver, the JSON encoder of batches or the spool's disk writes.

The writer process runs the ordinary `QueryLogWriter` (bounded queue, batching, spool on
outage, replay, drain on close) behind a Unix socket. Serving processes connect with
`QueryLogClient` (`querylog.client`) and send one line per record. The wire is lines:

    client -> writer   P <seq> <record line>     a record (item_to_line)
                       H <id> <json>             has_request({"request_id", "tenant_id"})
                       F <id>                    flush, probing the database now
                       D <id>                    wait until everything is stored
                       S <id>                    the writer's counters (WriterStats)
    writer -> client   A <seq>                   every record up to <seq> is durable
                       R <id> <answer>           the answer to H, F, D (1) or S (JSON)

(fields separated by one tab). The writer commits in groups: after a record arrives it lets
more come for up to `commit_delay_s` (or a batch's worth), makes them all durable in one
pass and acknowledges the last; one transaction per record would cost the writer process
more CPU than the serving process spends on the request. "Durable" means stored in the
database or appended to the writer's spool and fsynced: a client forgets a record only
once it is acknowledged, and sends what is unacknowledged again after the writer process
restarts. Stores skip ids they already hold, so a record sent twice is stored once.

`WriterProcess` is the parent's handle: start (waiting until the socket listens), stop
(SIGTERM: the writer drains to the database, or to its spool, within close_timeout_s),
restart after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.querylog.records import QueryRecord, item_from_line
from tierroute.querylog.store import STORE_CLOSE_TIMEOUT_S
from tierroute.querylog.writer import QueryLogWriter
from tierroute.settings import QueryLogConfig

logger = logging.getLogger(__name__)

SOCKET_NAME = "querylog.sock"
# How long start-up waits for the child to migrate nothing and listen (it never waits for
# the database; this bounds interpreter start and imports on a loaded machine).
START_TIMEOUT_S = 60.0
_READ_CHUNK = 1 << 16
_PARENT_POLL_S = 1.0


class WriterProcess:
    """The parent's handle on the one query-log writer process of a server or worker group."""

    def __init__(
        self, config: QueryLogConfig, run_dir: Path, *, keep_shadow_text: bool = False
    ) -> None:
        self.config = config
        self.keep_shadow_text = keep_shadow_text
        self.address = run_dir / SOCKET_NAME
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None

    @property
    def pid(self) -> int | None:
        """The running writer process's id."""
        return None if self._process is None else self._process.pid

    @property
    def sentinel(self) -> int | None:
        """A handle that becomes ready when the process ends (multiprocessing.connection.wait)."""
        return None if self._process is None else self._process.sentinel

    def is_alive(self) -> bool:
        """Whether the writer process is running."""
        return self._process is not None and self._process.is_alive()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Spawn the writer and wait until it listens; ConfigError (one line) when it cannot."""
        with contextlib.suppress(FileNotFoundError):
            self.address.unlink()
        parent, child = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=writer_process_main,
            args=(
                self.config,
                str(self.address),
                child,
                logging.getLogger().level,
                self.keep_shadow_text,
            ),
            name="tierroute-querylog-writer",
        )
        process.start()
        child.close()
        self._process = process
        try:
            if not parent.poll(timeout_s):
                raise ConfigError(f"query log writer process did not start within {timeout_s} s")
            status, detail = parent.recv()
        except EOFError:
            status, detail = "error", f"exit code {process.exitcode}"
        finally:
            parent.close()
        if status != "ready":
            process.join(5)
            self._process = None
            raise ConfigError(f"query log writer process failed to start: {detail}")
        logger.info("query log writer process %s listening on %s", process.pid, self.address)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then wait for the drain; SIGKILL after `timeout_s`. The exit code.

        The default wait covers the writer's own bounds: its connections' drain and its
        queue's (close_timeout_s each), then a database call stuck on a hung server, which
        the store abandons after its close timeout (STORE_CLOSE_TIMEOUT_S), and a margin.
        """
        process, self._process = self._process, None
        if process is None:
            return None
        wait = (
            2 * self.config.close_timeout_s + STORE_CLOSE_TIMEOUT_S + 5.0
            if timeout_s is None
            else timeout_s
        )
        if process.is_alive():
            process.terminate()
        process.join(wait)
        if process.is_alive():
            logger.error("query log writer process %s did not stop; killing it", process.pid)
            process.kill()
            process.join(5)
        code: int | None = process.exitcode
        return code

    def kill(self) -> None:
        """SIGKILL the process at once (tests of the crash path) and reap it."""
        if self._process is not None:
            self._process.kill()
            self._process.join(5)


def writer_process_main(
    config: QueryLogConfig,
    address: str,
    ready: Connection,
    log_level: int = logging.INFO,
    keep_shadow_text: bool = False,
) -> None:
    """The writer process: serve the socket until SIGTERM or the parent's death, then drain."""
    # Ctrl-C reaches the whole process group; the parent stops the writer last, after the
    # serving processes have sent it their last records.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level or logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [querylog-writer]: %(message)s",
    )
    asyncio.run(_serve(config, Path(address), ready, keep_shadow_text))


async def _serve(
    config: QueryLogConfig, address: Path, ready: Connection, keep_shadow_text: bool
) -> None:
    writer = QueryLogWriter.from_config(config, keep_shadow_text=keep_shadow_text)
    try:
        await writer.start()
    except ConfigError as exc:
        ready.send(("error", str(exc)))
        ready.close()
        await writer.store.aclose()
        return
    served = _Served(writer, config)
    server = await asyncio.start_unix_server(served.handle, path=str(address))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()
    ready.send(("ready", os.getpid()))
    ready.close()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _PARENT_POLL_S)
        if os.getppid() != parent:
            logger.warning("parent process gone; draining the query log and exiting")
            stop.set()
    server.close()
    # Connections still open get what they sent acknowledged or refused; then the drain.
    await served.finish(config.close_timeout_s)
    await writer.close(config.close_timeout_s)
    await asyncio.to_thread(address.unlink, missing_ok=True)


def _close_on_failure(task: asyncio.Task[None], out: asyncio.StreamWriter) -> None:
    if task.cancelled() or task.exception() is None:
        return
    logger.error(
        "query log writer: a durable pass failed (%s); closing the connection so that its "
        "client sends the unacknowledged records again",
        task.exception(),
    )
    out.close()


class _Pending:
    """Records of one connection taken by the writer and not yet acknowledged."""

    def __init__(self, config: QueryLogConfig) -> None:
        self._delay = config.commit_delay_s
        self._batch = config.batch_size
        self.last = 0  # the last sequence number taken
        self._since = 0  # records taken since the last take()
        self.arrived = asyncio.Event()
        self._full = asyncio.Event()
        self.finished = False

    def add(self, seq: int, count: int = 1) -> None:
        """`count` more records taken, up to sequence number `seq`."""
        self.last = max(self.last, seq)
        self._since += count
        self.arrived.set()
        if self._since >= self._batch:
            self._full.set()

    def finish(self) -> None:
        self.finished = True
        self.arrived.set()
        self._full.set()

    async def gather(self) -> None:
        """Let more records arrive: up to the commit delay, a batch's worth, or the end."""
        if self._delay > 0 and not self._full.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._delay):
                    await self._full.wait()

    def take(self) -> int:
        """The last sequence number to acknowledge after the next durable pass."""
        self.arrived.clear()
        if not self.finished:
            self._full.clear()
        self._since = 0
        return self.last


class _Served:
    """The socket's connections, each fed into the one writer."""

    def __init__(self, writer: QueryLogWriter, config: QueryLogConfig) -> None:
        self.writer = writer
        self.config = config
        self._connections: set[asyncio.Task[None]] = set()
        self._answers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._read(reader, out)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            out.close()
            with contextlib.suppress(ConnectionError):
                await out.wait_closed()

    async def finish(self, timeout_s: float) -> None:
        """Let connections end on their own (the clients close after their drain)."""
        if not self._connections:
            return
        _, pending = await asyncio.wait(set(self._connections), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _read(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        pending = _Pending(self.config)
        acknowledging = asyncio.create_task(self._acknowledge(pending, out))
        # A durable pass that fails ends the connection: its client reconnects and resends
        # what was not acknowledged, instead of waiting for acknowledgements that never come.
        acknowledging.add_done_callback(lambda task: _close_on_failure(task, out))
        try:
            rest = b""
            while chunk := await reader.read(_READ_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                if not await self._take(lines, out, pending):
                    break  # the writer refused a record (it is closing): the client keeps it
        except BaseException:
            # Cancelled (shutdown ran out of time) or the connection broke: the pass in
            # flight is cancelled with it (its batch goes to the spool); what is not
            # acknowledged stays with the client.
            acknowledging.cancel()
            await asyncio.gather(acknowledging, return_exceptions=True)
            raise
        # The client ended the connection (or a record was refused): what was taken is made
        # durable and acknowledged first.
        pending.finish()
        with contextlib.suppress(Exception):
            # A broken connection, or a failed pass that _close_on_failure logged (it closed
            # the connection): either way the client keeps what was not acknowledged.
            await acknowledging

    async def _acknowledge(self, pending: _Pending, out: asyncio.StreamWriter) -> None:
        """Group commit: one durable pass for what arrives within `commit_delay_s` (or a
        batch's worth), then one acknowledgement up to the last record it covered."""
        acknowledged = 0
        while True:
            await pending.arrived.wait()
            await pending.gather()
            last = pending.take()
            if last > acknowledged:
                await self.writer.persist()
                out.write(b"A\t%d\n" % last)
                await out.drain()
                acknowledged = last
            if pending.finished and pending.last == acknowledged:
                return

    async def _take(self, lines: list[bytes], out: asyncio.StreamWriter, pending: _Pending) -> bool:
        """Submit the chunk's records, then note them in `pending` (once the unreadable ones
        are kept too, so none is acknowledged before it is); False when one was refused."""
        unreadable: list[str] = []
        kept = True
        taken, last = 0, 0
        for raw in lines:
            kind, _, rest = raw.partition(b"\t")
            if kind == b"P":
                seq, _, line = rest.partition(b"\t")
                text = line.decode("utf-8", "surrogatepass")
                try:
                    item = item_from_line(text)
                except (ValueError, KeyError, TypeError):
                    unreadable.append(text)
                else:
                    kept = (
                        self.writer.submit(item)
                        if isinstance(item, QueryRecord)
                        else self.writer.submit_feedback(item)
                    )
                    if not kept:
                        break
                # A frame's number, not its place: the highest one is what gets acknowledged.
                taken, last = taken + 1, max(last, int(seq))
            elif kind in (b"H", b"F", b"D", b"S"):
                ident, _, body = rest.partition(b"\t")
                task = asyncio.create_task(self._answer(kind, ident, body, out))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
            elif raw:
                logger.error("query log writer: unknown message %r", raw[:40])
        if unreadable:
            await self.writer.keep_rejected(unreadable)
        if taken:
            pending.add(last, taken)
        return kept

    async def _answer(
        self, kind: bytes, ident: bytes, body: bytes, out: asyncio.StreamWriter
    ) -> None:
        answer = b"1"
        if kind == b"H":
            query = json.loads(body)
            known = await self.writer.has_request(
                query["request_id"], tenant_id=query.get("tenant_id")
            )
            answer = b"1" if known else b"0"
        elif kind == b"F":
            await self.writer.flush()
        elif kind == b"S":
            answer = json.dumps(dataclasses.asdict(self.writer.stats())).encode()
        else:
            await self.writer.wait_drained()
        with contextlib.suppress(ConnectionError, RuntimeError):
            out.write(b"R\t%s\t%s\n" % (ident, answer))


__all__ = ["SOCKET_NAME", "WriterProcess", "writer_process_main"]
