"""The familiarity signal in the query log (migration 0007): written and read back on SQLite
and PostgreSQL, logged by the real server, and the report's unfamiliar share per day."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers import make_settings, read_all, running_server
from tierroute.querylog import PostgresStore, SqliteStore, Store, open_store, summarize
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.records import item_from_line, item_to_line
from tierroute.querylog.report import format_table
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

DAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_spool_line_round_trips_familiarity() -> None:
    """A record's familiarity and flag survive the spool line the writer process reads."""
    record = sample_record("r1", familiarity=0.125, unfamiliar=True)
    assert item_from_line(item_to_line(record)) == record


async def _round_trip(store: Store) -> dict[str, tuple[float | None, bool]]:
    """Write a record with familiarity and one without, and read both back by request id."""
    await store.migrate()
    await store.write_batch(
        [sample_record("r1", familiarity=0.125, unfamiliar=True), sample_record("r2")], []
    )
    stored = {r.request_id: (r.familiarity, r.unfamiliar) for r in await store.fetch_queries()}
    await store.aclose()
    return stored


async def test_sqlite_round_trips_familiarity(sqlite_file: Path) -> None:
    """Familiarity reads back equal from SQLite; a call without it stores NULL and 0."""
    stored = await _round_trip(SqliteStore(sqlite_file))
    assert stored == {"r1": (0.125, True), "r2": (None, False)}
    with sqlite3.connect(sqlite_file) as conn:
        rows = conn.execute("SELECT familiarity, unfamiliar FROM query_log ORDER BY id").fetchall()
    conn.close()
    assert rows == [(0.125, 1), (None, 0)]


async def test_postgres_round_trips_familiarity(pg_url: str) -> None:
    """Familiarity reads back equal from PostgreSQL; a call without it stores NULL, false."""
    stored = await _round_trip(PostgresStore(pg_url))
    assert stored == {"r1": (0.125, True), "r2": (None, False)}


async def test_the_server_logs_a_routed_querys_familiarity(tmp_path: Path) -> None:
    """A Route call of an unfamiliar query is logged with its familiarity and the flag."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    settings = make_settings({"TIERROUTE_QUERYLOG_ENABLED": "true", "TIERROUTE_DB_URL": url})
    scorer = StaticScorer((0.9, 0.05, 0.05), familiarity=0.25, familiarity_threshold=0.5)
    async with running_server(settings, scorer=scorer) as s:
        await s.stub.Route(pb.RouteRequest(query="How do I exit vim?"))
    (record,) = await read_all(open_store(url))
    assert (record.familiarity, record.unfamiliar) == (0.25, True)


def test_report_gives_the_unfamiliar_share_per_day() -> None:
    """Day one: 1 of 2 calls unfamiliar; day two: 0 of 1; a call without a familiarity and a
    failed call are left out."""
    records = [
        sample_record("a", ts=DAY, familiarity=0.1, unfamiliar=True),
        sample_record("b", ts=DAY, familiarity=0.9, kind="route"),
        sample_record("c", ts=DAY),
        sample_record("d", ts=DAY, familiarity=0.1, unfamiliar=True, status="INTERNAL"),
        sample_record("e", ts=DAY + timedelta(days=1), familiarity=0.7),
    ]
    report = summarize(records, [], ("cheap", "mid", "expensive"))
    days = {day: (d.calls, d.unfamiliar, d.share) for day, d in report.unfamiliar_by_day.items()}
    assert days == {"2026-12-07": (2, 1, 0.5), "2026-12-08": (1, 0, 0.0)}
    assert report.to_json()["unfamiliar_by_day"]["2026-12-07"]["share"] == 0.5
    assert "2026-12-07        1 of        2 calls    50.0 %" in format_table(report)
