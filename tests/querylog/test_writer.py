"""The loss-free query-log writer: queue, spool and replay, on SQLite and through PostgreSQL
outages, hangs and concurrent writer processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.helpers import T0, numbered_records, read_all, stored_ids
from tierroute.errors import ConfigError
from tierroute.querylog import (
    FeedbackRecord,
    QueryLogWriter,
    SqliteStore,
    StoreRejected,
    StoreUnavailable,
    open_store,
)
from tierroute.querylog.doubles import (
    ToggleProxy,
    sample_record,
    with_port,
    write_records_process,
)
from tierroute.querylog.migrations import load
from tierroute.querylog.postgres import PostgresStore
from tierroute.querylog.records import item_from_line, item_to_line
from tierroute.querylog.spool import Spool
from tierroute.settings import QueryLogConfig


def config(tmp_path: Path, **changes: object) -> QueryLogConfig:
    """A writer configuration with its spool under tmp_path and fast retries."""
    values: dict[str, object] = {
        "queue_size": 100,
        "batch_size": 10,
        "flush_interval_s": 0.01,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "spool_path": tmp_path / "spool" / "querylog.spool.jsonl",
    }
    values.update(changes)
    return QueryLogConfig(**values)  # type: ignore[arg-type]


# -- the writer, on SQLite ----------------------------------------------------------------------


async def test_writer_stores_what_is_submitted(sqlite_file: Path, tmp_path: Path) -> None:
    """Submitted records and feedback reach the store once the writer has drained."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await writer.start()
    for record in numbered_records("w", 25):
        assert writer.submit(record)
    assert writer.submit_feedback(FeedbackRecord("w-3", ts=T0, rating=2))
    await writer.wait_drained()
    await writer.close(timeout_s=30)
    stats = writer.stats()
    assert (stats.enqueued, stats.written, stats.spooled, stats.lost) == (26, 26, 0, 0)
    assert await stored_ids(sqlite_file) == [f"w-{i}" for i in range(25)]


@pytest.mark.parametrize(("opted_in", "expected"), [(False, None), (True, "the question")])
async def test_writer_keeps_query_text_only_when_opted_in(
    sqlite_file: Path, tmp_path: Path, opted_in: bool, expected: str | None
) -> None:
    """Query text is stored only with querylog.store_text; the hash always is."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path, store_text=opted_in))
    await writer.start()
    writer.submit(sample_record("t", query_text="the question"))
    await writer.close(timeout_s=30)
    (stored,) = await read_all(SqliteStore(sqlite_file))
    assert (stored.query_text, stored.query_sha256) == (expected, sample_record("t").query_sha256)


async def test_full_queue_spills_to_spool_and_replays_in_order(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """With the queue full, records go to the spool, counted, and are replayed in order."""
    writer = QueryLogWriter(
        SqliteStore(sqlite_file), config(tmp_path, queue_size=5, batch_size=100)
    )
    await writer.start()
    # No await between submits, so the flusher cannot run: the queue fills deterministically.
    assert all(writer.submit(r) for r in numbered_records("q", 12))
    stats = writer.stats()
    assert (stats.enqueued, stats.queue_full, stats.spilled, stats.queue_depth) == (5, 7, 7, 5)
    await writer.flush()
    stored = await stored_ids(sqlite_file)
    # The spool is replayed before the queue is written; each keeps its own order.
    assert stored == [f"q-{i}" for i in range(5, 12)] + [f"q-{i}" for i in range(5)]
    assert writer.stats().replayed == 7
    await writer.close(timeout_s=30)


async def test_close_with_full_queue_drains_everything(sqlite_file: Path, tmp_path: Path) -> None:
    """Shutting down with a full queue and a spilled spool stores every record."""
    writer = QueryLogWriter(
        SqliteStore(sqlite_file),
        config(tmp_path, queue_size=50, batch_size=7, flush_interval_s=3600),
    )
    await writer.start()
    for record in numbered_records("c", 80):
        writer.submit(record)
    assert writer.stats().queue_depth == 50
    await writer.close(timeout_s=60)
    stored = await read_all(SqliteStore(sqlite_file))
    assert sorted(r.request_id for r in stored) == sorted(f"c-{i}" for i in range(80))
    assert writer.stats().lost == 0
    assert not Spool(config(tmp_path).spool_path).path.read_bytes()


async def test_outage_spools_then_replays_without_loss(sqlite_file: Path, tmp_path: Path) -> None:
    """While the database directory is gone batches are spooled; once back, all are stored."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path, flush_interval_s=3600))
    await writer.start()
    for record in numbered_records("o", 5):
        writer.submit(record)
    await writer.flush()
    away = sqlite_file.parent.with_name("db-away")
    sqlite_file.parent.rename(away)
    for record in numbered_records("o", 30, start=5):
        writer.submit(record)
    writer.submit_feedback(FeedbackRecord("o-7", ts=T0, correct=True))
    await writer.flush()
    stats = writer.stats()
    assert (stats.spooled, stats.database_up, stats.spool_pending) == (31, False, True)
    assert stats.failed_batches >= 1
    away.rename(sqlite_file.parent)
    await writer.flush()
    await writer.close(timeout_s=30)
    store = SqliteStore(sqlite_file)
    assert [f.request_id for f in await store.fetch_feedback()] == ["o-7"]
    assert await stored_ids(sqlite_file) == [f"o-{i}" for i in range(35)]
    await store.aclose()
    assert writer.stats().replayed == 31


async def test_background_flusher_recovers_after_outage(sqlite_file: Path, tmp_path: Path) -> None:
    """The flusher probes with back-off on its own and replays once the database is back."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await writer.start()
    away = sqlite_file.parent.with_name("db-away")
    sqlite_file.parent.rename(away)
    for record in numbered_records("b", 12):
        writer.submit(record)
    await writer.flush()
    assert writer.stats().spool_pending
    away.rename(sqlite_file.parent)
    await writer.wait_drained()
    assert writer.stats().database_up
    await writer.close(timeout_s=30)
    assert len(await read_all(SqliteStore(sqlite_file))) == 12


async def test_close_while_down_spools_and_next_writer_replays(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """Records left by a shutdown during an outage are stored by the next writer."""
    sqlite_file.parent.rmdir()
    first = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await first.start()
    for record in numbered_records("n", 15):
        first.submit(record)
    await first.close(timeout_s=30)
    assert (first.stats().spooled, first.stats().lost) == (15, 0)
    sqlite_file.parent.mkdir()
    second = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await second.start()
    await second.flush()
    await second.close(timeout_s=30)
    assert await stored_ids(sqlite_file) == [f"n-{i}" for i in range(15)]


async def test_rejected_records_are_kept_aside(sqlite_file: Path, tmp_path: Path) -> None:
    """A record the database refuses goes to the rejected file; its batch-mates are stored."""
    cfg = config(tmp_path)
    writer = QueryLogWriter(SqliteStore(sqlite_file), cfg)
    await writer.start()
    writer.submit(sample_record("ok-1"))
    writer.submit(sample_record("bad", decision_time_us=2**70))
    writer.submit(sample_record("ok-2"))
    await writer.close(timeout_s=30)
    assert await stored_ids(sqlite_file) == ["ok-1", "ok-2"]
    rejected = Spool(cfg.spool_path).rejected_path.read_text().splitlines()
    assert [json.loads(line)["record"]["request_id"] for line in rejected] == ["bad"]
    assert writer.stats().rejected == 1


async def test_submit_from_other_threads_loses_nothing(sqlite_file: Path, tmp_path: Path) -> None:
    """submit is safe from worker threads (a sync gRPC server) while the loop flushes."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path, queue_size=20))

    def produce(prefix: str) -> None:
        for record in numbered_records(prefix, 150):
            assert writer.submit(record)

    await writer.start()
    await asyncio.gather(*(asyncio.to_thread(produce, p) for p in ("x", "y", "z")))
    await writer.close(timeout_s=60)
    assert len(await read_all(SqliteStore(sqlite_file))) == 450
    assert writer.stats().lost == 0


async def test_submit_after_close_is_counted_as_lost(sqlite_file: Path, tmp_path: Path) -> None:
    """After close, submit returns False and counts the record instead of raising."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await writer.start()
    await writer.close(timeout_s=30)
    assert writer.submit(sample_record("late")) is False
    assert writer.stats().lost == 1


async def test_has_request_sees_unflushed_and_stored_ids(sqlite_file: Path, tmp_path: Path) -> None:
    """Feedback lookup finds ids still queued and ids stored, and not unknown ones."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path, flush_interval_s=3600))
    await writer.start()
    writer.submit(sample_record("queued"))
    assert await writer.has_request("queued")
    await writer.flush()
    assert await writer.has_request("queued")
    assert not await writer.has_request("never-seen")
    await writer.close(timeout_s=30)


async def test_has_request_says_yes_when_it_cannot_know(sqlite_file: Path, tmp_path: Path) -> None:
    """While the store is unreachable, lookups accept rather than answer a false NOT_FOUND."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await writer.start()
    sqlite_file.parent.rename(sqlite_file.parent.with_name("db-away"))
    assert await writer.has_request("unknown")
    await writer.close(timeout_s=30)


async def test_second_writer_on_one_spool_is_refused(sqlite_file: Path, tmp_path: Path) -> None:
    """Two writers cannot share a spool file: the second fails to start."""
    first = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    second = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await first.start()
    with pytest.raises(ConfigError, match="in use"):
        await second.start()
    await first.close(timeout_s=30)
    await second.store.aclose()


def test_spool_finishes_a_torn_last_line(tmp_path: Path) -> None:
    """A line torn by a crash is ended on open, so later lines stay whole and readable."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(item_to_line(sample_record("a")).encode() + b'\n{"torn')
    spool = Spool(path)
    spool.open()
    spool.append([item_to_line(sample_record("b"))], sync=True)
    lines, _ = spool.read(10)
    spool.close()
    assert len(lines) == 3
    assert item_from_line(lines[2].decode()).request_id == "b"


class _OutageMidRetry:
    """A store that refuses a batch, then goes down while rows are retried one by one."""

    display_url = "test://outage"

    def __init__(self) -> None:
        self.calls = 0

    async def migrate(self) -> int:
        return 1

    async def write_batch(self, queries: object, feedback: object) -> None:
        self.calls += 1
        if self.calls == 1:
            raise StoreRejected("one bad row in the batch")
        raise StoreUnavailable("the database went down")

    async def has_request(self, request_id: str) -> bool:
        return False

    async def aclose(self) -> None:
        return None


async def test_outage_during_row_retry_spools_instead_of_rejecting(tmp_path: Path) -> None:
    """A database outage mid-way through a row-by-row retry spools records, rejects none."""
    config = dataclasses.replace(
        QueryLogConfig(), spool_path=tmp_path / "spool.jsonl", batch_size=5
    )
    writer = QueryLogWriter(_OutageMidRetry(), config)  # type: ignore[arg-type]
    await writer.start()
    for i in range(5):
        writer.submit(sample_record(f"r{i}"))
    await writer.flush()
    stats = writer.stats()
    await writer.close(2)
    assert stats.rejected == 0
    assert not (tmp_path / "spool.jsonl.rejected").exists()


# -- through PostgreSQL -------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_outage_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """Through a database cut-off and return, every record is stored exactly once, in order."""
    target = urlsplit(pg_url)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        writer = QueryLogWriter(
            open_store(with_port(pg_url, proxy.port)), config(tmp_path, flush_interval_s=3600)
        )
        await writer.start()
        for record in numbered_records("pg", 20):
            writer.submit(record)
        await writer.flush()
        proxy.disable()
        for record in numbered_records("pg", 40, start=20):
            writer.submit(record)
        writer.submit_feedback(FeedbackRecord("pg-25", ts=T0, rating=4))
        await writer.flush()
        stats = writer.stats()
        assert (stats.spooled, stats.database_up) == (41, False)
        proxy.enable()
        await writer.flush()
        await writer.close(timeout_s=60)
    store = open_store(pg_url)
    assert [f.rating for f in await store.fetch_feedback()] == [4]
    assert [r.request_id for r in await read_all(store)] == [f"pg-{i}" for i in range(60)]


@pytest.mark.postgres
async def test_postgres_shutdown_during_outage_then_restart(pg_url: str, tmp_path: Path) -> None:
    """Closing while the database is cut off spools; a writer started later stores it all."""
    target = urlsplit(pg_url)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        url = with_port(pg_url, proxy.port)
        first = QueryLogWriter(open_store(url), config(tmp_path))
        await first.start()
        proxy.disable()
        for record in numbered_records("sd", 25):
            first.submit(record)
        await first.close(timeout_s=30)
        assert (first.stats().spooled, first.stats().lost) == (25, 0)
        proxy.enable()
        second = QueryLogWriter(open_store(url), config(tmp_path))
        await second.start()
        await second.wait_drained()
        await second.close(timeout_s=30)
    store = open_store(pg_url)
    assert len(await store.fetch_queries()) == 25
    await store.aclose()


@pytest.mark.postgres
async def test_close_during_network_hang_spools_in_time(pg_url: str, tmp_path: Path) -> None:
    """When the database hangs, close gives up at its timeout and spools what it holds."""
    target = urlsplit(pg_url)
    cfg = config(tmp_path, flush_interval_s=3600)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        url = with_port(pg_url, proxy.port)
        writer = QueryLogWriter(PostgresStore(url, close_timeout_s=0.1), cfg)
        await writer.start()
        proxy.stall()
        for record in numbered_records("h", 30):
            writer.submit(record)
        # Nothing can finish against a hung server, so this must end by its timeout.
        await writer.close(timeout_s=0.2)
        assert (writer.stats().written, writer.stats().spooled, writer.stats().lost) == (0, 30, 0)
        proxy.enable()
        second = QueryLogWriter(open_store(url), cfg)
        await second.start()
        await second.flush()
        await second.close(timeout_s=30)
    assert [r.request_id for r in await read_all(open_store(pg_url))] == [
        f"h-{i}" for i in range(30)
    ]


@pytest.mark.postgres
async def test_has_request_answers_yes_when_the_database_hangs(pg_url: str, tmp_path: Path) -> None:
    """A Feedback lookup against a hung database gives up at its timeout and accepts."""
    target = urlsplit(pg_url)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        writer = QueryLogWriter(
            PostgresStore(with_port(pg_url, proxy.port), close_timeout_s=0.1), config(tmp_path)
        )
        await writer.start()
        await writer.flush()
        proxy.stall()
        assert await writer.has_request("unknown", timeout_s=0.1)
        await writer.close(timeout_s=0.1)


@pytest.mark.postgres
def test_two_writer_processes_lose_and_duplicate_nothing(pg_url: str, tmp_path: Path) -> None:
    """Two processes writing to one PostgreSQL at once store every record exactly once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    processes = [
        ctx.Process(
            target=write_records_process,
            kwargs={
                "url": pg_url,
                "spool_path": str(tmp_path / f"spool-{name}.jsonl"),
                "prefix": name,
                "count": 400,
                "shared": 100,
                "barrier": barrier,
            },
        )
        for name in ("p1", "p2")
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=240)
    assert [p.exitcode for p in processes] == [0, 0]
    with psycopg.connect(pg_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT COUNT(*) FROM query_log), "
            "(SELECT COUNT(DISTINCT request_id) FROM query_log), "
            "(SELECT COUNT(*) FROM feedback), (SELECT COUNT(*) FROM schema_migrations)"
        ).fetchone()
    assert counts == (900, 900, 800, len(load("postgresql")))
