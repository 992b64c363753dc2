"""Real test doubles for the query log: a TCP proxy that can cut the database off, a
throw-away PostgreSQL schema, and a writer process body for multi-process tests.

Nothing here is mocked: `ToggleProxy` really refuses and resets connections, so a store
behind it fails exactly as it would when its database restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from tierroute.querylog.records import FeedbackRecord, QueryRecord, hash_query
from tierroute.settings import QueryLogConfig

DEFAULT_TEST_PG_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


class ToggleProxy:
    """A TCP proxy that can refuse and reset connections, hang them, or forward them.

    `disable` refuses new connections and resets open ones (a database restart); `stall`
    keeps connections open but forwards nothing (a hung server); `enable` resets what a
    stall held and forwards again. It runs its own event loop on a thread, so it serves
    blocking and async clients alike; each switch returns once it has taken effect.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._host = host
        self._port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled = False

    @property
    def port(self) -> int:
        """The port clients connect to; stable across disable/enable."""
        return self._port

    def start(self) -> ToggleProxy:
        """Start the loop thread and listen."""
        self._thread.start()
        self._call(self._enable(stalled=False))
        return self

    def disable(self) -> None:
        """Stop listening and reset every open connection."""
        self._call(self._disable())

    def enable(self) -> None:
        """Listen again on the same port and forward traffic."""
        self._call(self._enable(stalled=False))

    def stall(self) -> None:
        """Keep every connection open but forward nothing more (a hung server or network)."""
        self._call(self._stall())

    def close(self) -> None:
        """Disable and stop the loop thread."""
        if self._thread.is_alive():
            self._call(self._disable())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> ToggleProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _enable(self, *, stalled: bool) -> None:
        # Connections held by a stall are reset first: their clients see an error.
        await self._disable()
        self._stalled = stalled
        await self._listen()

    async def _stall(self) -> None:
        self._stalled = True
        await self._listen()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _disable(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._stalled:
                await asyncio.Event().wait()  # held until disable/enable/close cancels it
            up_reader, upstream = await asyncio.open_connection(*self._target)
            self._writers.add(upstream)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only _disable cancels these; ending quietly keeps asyncio from logging it.
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._stalled:
                await asyncio.Event().wait()  # swallow it; held until reset or close
            writer.write(data)
            await writer.drain()
        writer.transport.abort()


def with_search_path(url: str, schema: str) -> str:
    """`url` with libpq `options` that put `schema` first on the search_path."""
    parts = urlsplit(url)
    option = quote(f"-csearch_path={schema}", safe="")
    query = f"{parts.query}&options={option}" if parts.query else f"options={option}"
    return urlunsplit(parts._replace(query=query))


def with_port(url: str, port: int) -> str:
    """`url` pointed at 127.0.0.1:`port` (for a ToggleProxy in front of the database)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def reachable_postgres_url(environ: dict[str, str] | None = None) -> str | None:
    """The first test PostgreSQL URL that accepts a connection, or None."""
    import psycopg

    env = os.environ if environ is None else environ
    candidates = [env["TIERROUTE_TEST_PG_URL"]] if env.get("TIERROUTE_TEST_PG_URL") else []
    for url in [*candidates, *DEFAULT_TEST_PG_URLS]:
        with contextlib.suppress(psycopg.Error):
            psycopg.connect(url, connect_timeout=3).close()
            return url
    return None


@contextlib.contextmanager
def temporary_schema(url: str) -> Iterator[str]:
    """A fresh schema for one test; yields `url` bound to it, and drops it afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"tr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def sample_record(request_id: str, **changes: Any) -> QueryRecord:
    """A complete, plausible cascade record for tests; `changes` override fields."""
    query = f"What is the capital of the place numbered {request_id}?"
    record = QueryRecord(
        request_id=request_id,
        kind="cascade",
        query_sha256=hash_query(query),
        query_chars=len(query),
        tenant_id="tenant-a",
        session_id="session-1",
        strategy="classifier",
        rule="calibrated",
        scores=[0.7, 0.2, 0.1],
        chosen_tier="cheap",
        final_tier="cheap",
        model_version="v1",
        decision_time_us=85,
        estimated_cost_usd=0.0004,
        hops=[
            {
                "tier": "cheap",
                "model": "claude-haiku-4-5",
                "role": "answer",
                "outcome": "ok",
                "input_tokens": 120,
                "output_tokens": 40,
                "cost_usd": 0.00032,
                "latency_ms": 812.5,
                "verdict": "",
                "issues": [],
                "attempt": 1,
                "speculative": False,
                "error_kind": "",
                "cache_creation_input_tokens": 30,
                "cache_read_input_tokens": 200,
            },
        ],
        cache_creation_tokens=30,
        cache_read_tokens=200,
        stop_reason="end_turn",
        total_cost_usd=0.00032,
        total_latency_ms=815.0,
        judge_status="SAMPLED_OUT",
        query_type="factual",
        status="OK",
        metadata={"client": "test"},
    )
    return replace(record, **changes)


def write_records_process(
    *,
    url: str,
    spool_path: str,
    prefix: str,
    count: int,
    shared: int,
    barrier: Any,
) -> None:
    """Body of a writer process: `count` own records plus `shared` ids every process sends.

    Waits on `barrier` so that processes migrate and write at the same moment. Exits
    non-zero (by raising) when anything was lost.
    """
    asyncio.run(_write_records(url, spool_path, prefix, count, shared=shared, barrier=barrier))


async def _write_records(
    url: str, spool_path: str, prefix: str, count: int, *, shared: int, barrier: Any
) -> None:
    from tierroute.querylog.factory import open_store
    from tierroute.querylog.writer import QueryLogWriter

    config = QueryLogConfig(
        queue_size=64, batch_size=16, flush_interval_s=0.01, spool_path=Path(spool_path)
    )
    writer = QueryLogWriter(open_store(url), config)
    await asyncio.to_thread(barrier.wait)
    await writer.start()
    for i in range(count):
        writer.submit(sample_record(f"{prefix}-{i}"))
        writer.submit_feedback(FeedbackRecord(request_id=f"{prefix}-{i}", rating=1 + i % 5))
        if i % 32 == 0:
            await asyncio.sleep(0)  # let the flusher interleave with the other process
    for i in range(shared):
        writer.submit(sample_record(f"shared-{i}"))
    await writer.close(timeout_s=120)
    stats = writer.stats()
    if stats.lost or stats.rejected:
        raise RuntimeError(f"writer {prefix} lost records: {stats}")
