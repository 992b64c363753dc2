"""The value policy's estimates in the query log (migration 0006): written, read back and
left NULL when a call had no plan, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from tierroute.api.recording import value_plan_record
from tierroute.querylog import PostgresStore, SqliteStore
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.records import ValuePlanRecord, item_from_line, item_to_line
from tierroute.routing.plan import ACTIONS, CascadePlan

PLAN: ValuePlanRecord = {
    "p_correct": [0.61, 0.7, 0.66, 0.72, 0.74, 0.8],
    "cost_usd": [0.0001, 0.0009, 0.0006, 0.0008, 0.0015, 0.003],
    "action": 3,
    "operating_point": "parity",
    "price_per_correct_usd": 0.29,
    "allowed": [True, True, True, True, True, False],
}


def test_a_plan_s_allowed_actions_are_logged() -> None:
    """A plan that could not take some actions logs which it could; one that could take all
    logs no mask."""
    masked = CascadePlan(
        0, ACTIONS[0], (0.5,) * 6, (0.001,) * 6, 0.3, "parity", (True,) * 5 + (False,)
    )
    assert value_plan_record(masked)["allowed"] == [True] * 5 + [False]
    assert "allowed" not in value_plan_record(
        CascadePlan(0, ACTIONS[0], (0.5,) * 6, (0.001,) * 6, 0.3)
    )


def test_spool_line_round_trips_the_value_plan() -> None:
    """A record's value plan survives the spool line the writer process reads."""
    record = sample_record("r1", value_plan=PLAN)
    assert item_from_line(item_to_line(record)) == record


async def test_sqlite_round_trips_the_value_plan(sqlite_file: Path) -> None:
    """A planned Cascade's estimates read back equal from SQLite."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.write_batch([sample_record("r1", value_plan=PLAN)], [])
    (stored,) = await store.fetch_queries()
    await store.aclose()
    assert stored.value_plan == PLAN


async def test_sqlite_keeps_sql_null_without_a_plan(sqlite_file: Path) -> None:
    """A call the value policy did not plan stores SQL NULL, not JSON null."""
    store = SqliteStore(sqlite_file)
    await store.migrate()
    await store.write_batch([sample_record("r1")], [])
    await store.aclose()
    with sqlite3.connect(sqlite_file) as conn:
        (value,) = conn.execute("SELECT value_plan FROM query_log").fetchone()
    conn.close()
    assert value is None


async def test_postgres_round_trips_the_value_plan(pg_url: str) -> None:
    """A planned Cascade's estimates read back equal from PostgreSQL's jsonb column."""
    store = PostgresStore(pg_url)
    await store.migrate()
    await store.write_batch([sample_record("r1", value_plan=PLAN), sample_record("r2")], [])
    stored = {r.request_id: r.value_plan for r in await store.fetch_queries()}
    await store.aclose()
    assert stored == {"r1": PLAN, "r2": None}


async def test_postgres_keeps_sql_null_without_a_plan(pg_url: str) -> None:
    """PostgreSQL stores NULL, not a jsonb null, for a call without a plan."""
    store = PostgresStore(pg_url)
    await store.migrate()
    await store.write_batch([sample_record("r1")], [])
    await store.aclose()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT value_plan IS NULL FROM query_log").fetchone()
    assert row == (True,)
