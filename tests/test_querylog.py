"""The query log: records, the SQLite and PostgreSQL stores, and the loss-free writer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import multiprocessing
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tierroute.errors import ConfigError
from tierroute.querylog import (
    FeedbackRecord,
    QueryLogWriter,
    QueryRecord,
    SqliteStore,
    Store,
    StoreRejected,
    StoreUnavailable,
    hash_query,
    open_store,
)
from tierroute.querylog.doubles import (
    ToggleProxy,
    reachable_postgres_url,
    sample_record,
    temporary_schema,
    with_port,
    write_records_process,
)
from tierroute.querylog.factory import sqlite_path
from tierroute.querylog.migrations import load, split_statements
from tierroute.querylog.postgres import PostgresStore
from tierroute.querylog.records import item_from_line, item_to_line
from tierroute.querylog.spool import Spool
from tierroute.querylog.store import redact_url
from tierroute.settings import QueryLogConfig, Settings

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


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


def records(prefix: str, n: int, start: int = 0) -> list[QueryRecord]:
    """n sample records with ids prefix-<i>, one second apart."""
    return [
        sample_record(f"{prefix}-{i}", ts=T0 + timedelta(seconds=i))
        for i in range(start, start + n)
    ]


async def read_all(store: Store) -> list[QueryRecord]:
    """Every stored query record in insertion order, read in small pages; closes the store."""
    try:
        return [r async for r in store.iter_queries(page_size=7)]
    finally:
        await store.aclose()


async def stored_ids(path: Path) -> list[str]:
    """Request ids stored in the SQLite log at `path`, in insertion order."""
    return [r.request_id for r in await read_all(SqliteStore(path))]


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    """A query-log file path in its own directory (which a test may take away)."""
    folder = tmp_path / "db"
    folder.mkdir()
    return folder / "querylog.sqlite3"


@pytest.fixture(scope="module")
def pg_base_url() -> str:
    """The test PostgreSQL; skipped when unreachable, except under CI where that fails."""
    url = reachable_postgres_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (database test)")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    return url


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A URL bound to a fresh schema that is dropped after the test."""
    with temporary_schema(pg_base_url) as url:
        yield url


# -- records and configuration ------------------------------------------------------------------


def test_record_refuses_naive_timestamp() -> None:
    """A record without a timezone is refused rather than stored at an ambiguous time."""
    with pytest.raises(ValueError, match="timezone"):
        sample_record("r", ts=datetime(2025, 1, 1))


def test_record_timestamp_is_converted_to_utc() -> None:
    """Aware timestamps in any zone are kept as the same instant in UTC."""
    plus_two = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert sample_record("r", ts=plus_two).ts.tzinfo is UTC


def test_spool_line_round_trips_every_field() -> None:
    """A query and a feedback record come back from their spool line unchanged."""
    query = sample_record("r1", query_text="secret?", escalation_reasons=["JUDGE_FAILED"])
    feedback = FeedbackRecord("r1", ts=T0, rating=None, correct=False, tenant_id="t")
    assert item_from_line(item_to_line(query)) == query
    assert item_from_line(item_to_line(feedback)) == feedback


def test_hash_query_is_sha256_of_utf8() -> None:
    """The query hash is the SHA-256 hex digest of the UTF-8 text."""
    assert hash_query("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_db_url_alias_reaches_querylog_settings() -> None:
    """TIERROUTE_DB_URL sets querylog.url, which prints as a secret."""
    settings = Settings.from_env({"TIERROUTE_DB_URL": "postgresql://u:pw@db/log"})
    assert settings.querylog.url.get() == "postgresql://u:pw@db/log"
    assert "pw" not in repr(settings.querylog)


def test_querylog_config_refuses_empty_queue() -> None:
    """A queue or batch size below 1 is a configuration error."""
    with pytest.raises(ConfigError):
        Settings.from_env({"TIERROUTE_QUERYLOG_QUEUE_SIZE": "0"})


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///log.sqlite3", Path("log.sqlite3")),
        ("sqlite:///sub/log.sqlite3", Path("sub/log.sqlite3")),
        ("sqlite:////var/lib/log.sqlite3", Path("/var/lib/log.sqlite3")),
        ("sqlite://", Path("tierroute-querylog.sqlite3")),
        ("sqlite:///", Path("tierroute-querylog.sqlite3")),
    ],
)
def test_sqlite_url_names_a_file(url: str, path: Path) -> None:
    """sqlite:///PATH is relative, sqlite:////PATH absolute, an empty path the default."""
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite:///:memory:", "sqlite:relative.db"])
def test_open_store_refuses_unsupported_urls(url: str) -> None:
    """Unknown schemes, in-memory SQLite and malformed SQLite URLs are configuration errors."""
    with pytest.raises(ConfigError):
        open_store(url)


def test_redact_url_hides_the_password() -> None:
    """Passwords never appear in a store's display URL."""
    assert redact_url("postgresql://u:hunter2@db:5432/log") == "postgresql://u:***@db:5432/log"
    assert "hunter2" not in redact_url("host=db password=hunter2 dbname=log")


def test_split_statements_keeps_semicolons_inside_strings() -> None:
    """The migration splitter ends statements only at real semicolons."""
    script = "-- c\nCREATE TABLE t (a TEXT DEFAULT ';');\nINSERT INTO t VALUES ('x;y');\n"
    assert len(split_statements(script)) == 2


def test_both_dialects_ship_the_same_migration_versions() -> None:
    """SQLite and PostgreSQL migrations advance in step."""
    assert [m.version for m in load("sqlite")] == [m.version for m in load("postgresql")]


# -- the SQLite store ---------------------------------------------------------------------------


async def test_sqlite_round_trips_a_record(sqlite_file: Path) -> None:
    """Every field of a record reads back equal from SQLite."""
    store = SqliteStore(sqlite_file)
    record = sample_record(
        "r1",
        query_text="Wie spät ist es? 東京 🙂",
        escalation_reasons=["JUDGE_FAILED"],
        degraded=True,
        escalated=True,
        metadata={"k": "v"},
    )
    await store.migrate()
    await store.write_batch([record], [])
    assert await store.fetch_queries() == [record]
    await store.aclose()


async def test_sqlite_file_is_in_wal_mode(sqlite_file: Path) -> None:
    """The SQLite log runs in WAL mode so readers never block the writer."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.aclose()
    with sqlite3.connect(sqlite_file) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_migrations_are_idempotent(sqlite_file: Path) -> None:
    """Migrating twice applies each version once."""
    store = SqliteStore(sqlite_file)
    latest = load("sqlite")[-1].version
    assert await store.schema_version() == 0
    assert await store.migrate() == latest
    assert await store.migrate() == latest
    await store.aclose()
    with sqlite3.connect(sqlite_file) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [
            (m.version,) for m in load("sqlite")
        ]
    conn.close()


def test_sqlite_concurrent_migrations_apply_once(sqlite_file: Path) -> None:
    """Two stores migrating one new file at the same moment both succeed, applying it once."""
    assert_concurrent_migrations(lambda: SqliteStore(sqlite_file, busy_timeout_s=30))
    with sqlite3.connect(sqlite_file) as conn:
        count = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        assert count == (len(load("sqlite")),)
    conn.close()


def assert_concurrent_migrations(make_store: object) -> None:
    """Run migrate() on two threads released together; both must report the latest version."""
    barrier = threading.Barrier(2)
    results: list[object] = []

    def migrate() -> None:
        store = make_store()  # type: ignore[operator]
        barrier.wait()
        try:
            results.append(asyncio.run(store.migrate()))
        except Exception as exc:
            results.append(exc)
        asyncio.run(store.aclose())

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latest = load("sqlite")[-1].version
    assert results == [latest, latest]


async def test_sqlite_skips_ids_it_already_holds(sqlite_file: Path) -> None:
    """A batch written twice (a retry) is stored once: inserts are idempotent on ids."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    feedback = FeedbackRecord("a-0", ts=T0, rating=5)
    for _ in range(2):
        await store.write_batch(records("a", 3), [feedback])
    assert len(await store.fetch_queries()) == 3
    assert await store.fetch_feedback() == [feedback]
    await store.aclose()


async def test_fetch_queries_filters_by_tier_and_time(sqlite_file: Path) -> None:
    """Recent calls answered by one tier come back newest first, within the window."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    batch = [
        dataclasses.replace(r, final_tier="mid" if i % 2 else "cheap")
        for i, r in enumerate(records("f", 10))
    ]
    await store.write_batch(batch, [])
    got = await store.fetch_queries(
        since=T0 + timedelta(seconds=2), final_tier="cheap", newest_first=True, limit=3
    )
    assert [r.request_id for r in got] == ["f-8", "f-6", "f-4"]
    assert await store.count_by("final_tier", since=T0 + timedelta(seconds=5)) == {
        "cheap": 2,
        "mid": 3,
    }
    await store.aclose()


async def test_iter_queries_pages_through_everything(sqlite_file: Path) -> None:
    """Reading page by page returns every record once, in insertion order."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.write_batch(records("p", 20), [])
    await store.aclose()
    assert await stored_ids(sqlite_file) == [f"p-{i}" for i in range(20)]


async def test_sqlite_in_missing_directory_is_unavailable(tmp_path: Path) -> None:
    """A SQLite file whose directory is gone fails as unavailable, not as bad data."""
    store = SqliteStore(tmp_path / "nowhere" / "log.sqlite3")
    with pytest.raises(StoreUnavailable):
        await store.migrate()
    await store.aclose()


async def test_sqlite_refuses_an_unstorable_value(sqlite_file: Path) -> None:
    """A value SQLite cannot hold is a rejection, which retrying cannot fix."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    with pytest.raises(StoreRejected):
        await store.write_batch([sample_record("big", decision_time_us=2**70)], [])
    await store.aclose()


# -- the writer, on SQLite ----------------------------------------------------------------------


async def test_writer_stores_what_is_submitted(sqlite_file: Path, tmp_path: Path) -> None:
    """Submitted records and feedback reach the store once the writer has drained."""
    writer = QueryLogWriter(SqliteStore(sqlite_file), config(tmp_path))
    await writer.start()
    for record in records("w", 25):
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
    assert all(writer.submit(r) for r in records("q", 12))
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
    for record in records("c", 80):
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
    for record in records("o", 5):
        writer.submit(record)
    await writer.flush()
    away = sqlite_file.parent.with_name("db-away")
    sqlite_file.parent.rename(away)
    for record in records("o", 30, start=5):
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
    for record in records("b", 12):
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
    for record in records("n", 15):
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
        for record in records(prefix, 150):
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


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_round_trips_a_record(pg_url: str) -> None:
    """Every field of a record reads back equal from PostgreSQL."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    record = sample_record("r1", query_text="東京 🙂", escalated=True, metadata={"a": "b"})
    await store.migrate()
    await store.write_batch([record], [FeedbackRecord("r1", ts=T0, rating=3, correct=True)])
    assert await store.fetch_queries() == [record]
    assert [f.rating for f in await store.fetch_feedback()] == [3]
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_stores_text_with_nul_characters(pg_url: str) -> None:
    """NUL characters, which PostgreSQL text cannot hold, are stored as U+FFFD."""
    store = open_store(pg_url)
    await store.migrate()
    await store.write_batch([sample_record("z", metadata={"k": "a\x00b"}, tenant_id="t\x00")], [])
    (stored,) = await store.fetch_queries()
    assert (stored.tenant_id, stored.metadata) == ("t\ufffd", {"k": "a\ufffdb"})
    await store.aclose()


@pytest.mark.postgres
def test_postgres_concurrent_migrations_apply_once(pg_url: str) -> None:
    """Two stores migrating one new schema at once both succeed, applying it once."""
    assert_concurrent_migrations(lambda: PostgresStore(pg_url))
    with psycopg.connect(pg_url) as conn:
        count = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        assert count == (len(load("postgresql")),)


@pytest.mark.postgres
async def test_postgres_migrations_are_idempotent(pg_url: str) -> None:
    """Migrating an up-to-date schema changes nothing."""
    store = open_store(pg_url)
    latest = load("postgresql")[-1].version
    assert await store.schema_version() == 0
    assert await store.migrate() == latest
    assert await store.migrate() == latest
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_refuses_out_of_range_value(pg_url: str) -> None:
    """A value outside PostgreSQL's column range is a rejection, not an outage."""
    store = open_store(pg_url)
    await store.migrate()
    with pytest.raises(StoreRejected):
        await store.write_batch([sample_record("big", decision_time_us=2**63)], [])
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_where_nothing_listens_is_unavailable(pg_url: str) -> None:
    """A store pointed at a closed port reports the database as unavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The socket is closed again, so nothing listens there: connections are refused.
    store = open_store(with_port(pg_url, port))
    with pytest.raises(StoreUnavailable):
        await store.migrate()
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_outage_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """Through a database cut-off and return, every record is stored exactly once, in order."""
    target = urlsplit(pg_url)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        writer = QueryLogWriter(
            open_store(with_port(pg_url, proxy.port)), config(tmp_path, flush_interval_s=3600)
        )
        await writer.start()
        for record in records("pg", 20):
            writer.submit(record)
        await writer.flush()
        proxy.disable()
        for record in records("pg", 40, start=20):
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
        for record in records("sd", 25):
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
        for record in records("h", 30):
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


async def test_nan_scores_survive_as_nan(sqlite_file: Path) -> None:
    """Non-finite scores (which JSON cannot hold) come back as NaN instead of failing."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.write_batch([sample_record("nan", scores=[math.nan, 0.5])], [])
    (stored,) = await read_all(store)
    assert math.isnan(stored.scores[0])
    assert stored.scores[1] == 0.5
