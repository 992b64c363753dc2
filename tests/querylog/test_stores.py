"""The query-log stores: URLs and migrations, then SQLite and PostgreSQL, each on a real
database (a SQLite file; the PostgreSQL at 127.0.0.1:5432 in a schema of its own)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.helpers import T0, numbered_records, read_all, stored_ids
from tierroute.errors import ConfigError
from tierroute.querylog import (
    FeedbackRecord,
    SqliteStore,
    StoreRejected,
    StoreUnavailable,
    open_store,
)
from tierroute.querylog.doubles import sample_record, with_port
from tierroute.querylog.factory import sqlite_path
from tierroute.querylog.migrations import load, split_statements
from tierroute.querylog.postgres import PostgresStore
from tierroute.querylog.store import redact_url

# -- URLs and migrations -----------------------------------------------------------------------


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


# -- the SQLite store --------------------------------------------------------------------------


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
        await store.write_batch(numbered_records("a", 3), [feedback])
    assert len(await store.fetch_queries()) == 3
    assert await store.fetch_feedback() == [feedback]
    await store.aclose()


async def test_fetch_queries_filters_by_tier_and_time(sqlite_file: Path) -> None:
    """Recent calls answered by one tier come back newest first, within the window."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    batch = [
        dataclasses.replace(r, final_tier="mid" if i % 2 else "cheap")
        for i, r in enumerate(numbered_records("f", 10))
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
    await store.write_batch(numbered_records("p", 20), [])
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


async def test_nan_scores_survive_as_nan(sqlite_file: Path) -> None:
    """Non-finite scores (which JSON cannot hold) come back as NaN instead of failing."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.write_batch([sample_record("nan", scores=[math.nan, 0.5])], [])
    (stored,) = await read_all(store)
    assert math.isnan(stored.scores[0])
    assert stored.scores[1] == 0.5


# -- the PostgreSQL store ----------------------------------------------------------------------


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
