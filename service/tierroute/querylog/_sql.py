"""What the SQLite and PostgreSQL stores share: the SQL, row conversion and the threads.

Both stores drive a blocking DB-API driver (stdlib sqlite3, psycopg 3) from worker threads,
so the event loop never blocks. Writes and reads use separate one-thread workers: a slow
batch insert never delays a Feedback lookup, and writes stay strictly ordered. Closing waits
for a running call only up to `close_timeout_s`; a call stuck on a hung database is
abandoned on its daemon thread. A subclass supplies connections, transactions, the
migration lock and error translation.
"""

# SQL here is assembled from constant column lists, whitelisted identifiers and the
# dialect's placeholders; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from tierroute.querylog import migrations
from tierroute.querylog._worker import DaemonWorker
from tierroute.querylog.labels import LABEL_COLUMNS, TierLabel, label_from_json, label_to_json
from tierroute.querylog.records import (
    FeedbackRecord,
    QueryRecord,
    dumps,
    feedback_from_json,
    feedback_to_json,
    query_from_json,
    query_to_json,
    ts_text,
    utc_now,
)
from tierroute.querylog.store import (
    COUNTABLE_COLUMNS,
    STORE_CLOSE_TIMEOUT_S,
    QueryLogError,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

QUERY_COLUMNS = (
    "request_id", "ts", "kind", "tenant_id", "session_id", "query_sha256", "query_text",
    "query_chars", "strategy", "rule", "scores", "chosen_tier", "final_tier", "model_version",
    "decision_time_us", "estimated_cost_usd", "hops", "total_cost_usd", "total_latency_ms",
    "escalated", "escalation_reasons", "judge_status", "degraded", "query_type", "status",
    "metadata", "answer_text", "vocab_coverage", "cache_creation_tokens", "cache_read_tokens",
    "stop_reason", "value_plan", "familiarity", "unfamiliar",
)  # fmt: skip
FEEDBACK_COLUMNS = ("feedback_id", "request_id", "ts", "rating", "correct", "tenant_id")
JSON_COLUMNS = frozenset({"scores", "hops", "escalation_reasons", "metadata", "value_plan"})
# JSON columns that hold SQL NULL, not JSON null, when the record has no value.
NULLABLE_JSON_COLUMNS = frozenset({"value_plan"})


class SqlStore(abc.ABC):
    """A query-log store over a DB-API driver; subclasses fill in the dialect."""

    dialect: ClassVar[str]
    # How a parameter is written in SQL: plain, as JSON, as a timestamp.
    param: ClassVar[str]
    json_param: ClassVar[str]
    ts_param: ClassVar[str]
    migrations_table_ddl: ClassVar[str]

    def __init__(self, display_url: str, *, close_timeout_s: float = STORE_CLOSE_TIMEOUT_S) -> None:
        self._display_url = display_url
        self._close_timeout_s = close_timeout_s
        self._write_pool = DaemonWorker(f"querylog-{self.dialect}-w", self._release_thread)
        self._read_pool = DaemonWorker(f"querylog-{self.dialect}-r", self._release_thread)
        self._closed = False
        self._migrations = migrations.load(self.dialect)

    @property
    def display_url(self) -> str:
        """The store's URL with any password removed."""
        return self._display_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._display_url!r})"

    # -- what a dialect supplies ------------------------------------------------------------

    @abc.abstractmethod
    def _connection(self) -> contextlib.AbstractContextManager[Any]:
        """A DB-API connection for the calling worker thread, in autocommit mode."""

    @abc.abstractmethod
    def _transaction(
        self, conn: Any, *, migration: bool
    ) -> contextlib.AbstractContextManager[None]:
        """A write transaction; for a migration, one that holds the store-wide migration lock."""

    @abc.abstractmethod
    def _has_table(self, conn: Any, name: str) -> bool:
        """Whether table `name` exists where this store keeps its tables."""

    @abc.abstractmethod
    def _translate(self, exc: Exception) -> QueryLogError | None:
        """The store error a driver exception means, or None when it is not a driver error."""

    def _release_thread(self) -> None:  # noqa: B027 - a hook; most dialects keep nothing
        """Close the calling worker thread's connection, if the dialect keeps one."""

    def _json_text(self, value: Any) -> str:
        """The text stored in a JSON column for `value`."""
        return dumps(value)

    def _scalar(self, value: Any) -> Any:
        """A plain column's parameter; the identity unless the dialect refuses some text."""
        return value

    # -- running blocking work on the worker threads ----------------------------------------

    async def _run(self, pool: DaemonWorker, work: Callable[[Any], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"query log store {self._display_url} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._call, work)

    def _call(self, work: Callable[[Any], T]) -> T:
        try:
            with self._connection() as conn:
                return work(conn)
        except QueryLogError:
            raise
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc

    async def aclose(self) -> None:
        """Stop the workers; wait for a running call up to `close_timeout_s`, then abandon it."""
        if self._closed:
            return
        self._closed = True
        pools = (self._write_pool, self._read_pool)
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        # asyncio.wait, not wait_for: a timeout must not cancel the workers' futures.
        stopped = {asyncio.wrap_future(p.stopped()) for p in pools}
        _, running = await asyncio.wait(stopped, timeout=self._close_timeout_s)
        if running:
            logger.warning(
                "query log store %s: a database call still running after %.1f s was abandoned",
                self._display_url,
                self._close_timeout_s,
            )

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply missing migrations under the migration lock; return the schema version."""
        version = await self._run(self._write_pool, self._migrate)
        known = self._migrations[-1].version
        if version > known:
            logger.warning(
                "query log at %s is at schema version %s; this build knows up to %s",
                self._display_url,
                version,
                known,
            )
        return version

    def _migrate(self, conn: Any) -> int:
        with self._transaction(conn, migration=True):
            conn.execute(self.migrations_table_ddl)
            rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
            applied = {int(row[0]) for row in rows}
            for migration in self._migrations:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    f"VALUES ({self.param}, {self.param}, {self.ts_param})",
                    (migration.version, migration.name, ts_text(utc_now())),
                )
                applied.add(migration.version)
                logger.info(
                    "query log at %s migrated to version %s (%s)",
                    self._display_url,
                    migration.version,
                    migration.name,
                )
        return max(applied)

    async def schema_version(self) -> int:
        """The highest applied migration; 0 when the log was never created."""
        return await self._run(self._read_pool, self._schema_version)

    def _schema_version(self, conn: Any) -> int:
        if not self._has_table(conn, "schema_migrations"):
            return 0
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    # -- writes ------------------------------------------------------------------------------

    async def write_batch(
        self, queries: Sequence[QueryRecord], feedback: Sequence[FeedbackRecord]
    ) -> None:
        """Insert in one transaction; rows already stored (same id) are skipped."""
        if not queries and not feedback:
            return
        # Rows are serialised on the worker thread, not on the event loop.
        await self._run(self._write_pool, lambda conn: self._insert(conn, queries, feedback))

    def _insert(
        self, conn: Any, queries: Sequence[QueryRecord], feedback: Sequence[FeedbackRecord]
    ) -> None:
        query_rows = [self._query_params(q) for q in queries]
        feedback_rows = [self._feedback_params(f) for f in feedback]
        with self._transaction(conn, migration=False):
            cursor = conn.cursor()
            try:
                if query_rows:
                    cursor.executemany(self._insert_sql("query_log", QUERY_COLUMNS), query_rows)
                if feedback_rows:
                    cursor.executemany(
                        self._insert_sql("feedback", FEEDBACK_COLUMNS), feedback_rows
                    )
            finally:
                cursor.close()

    def _insert_sql(self, table: str, columns: Sequence[str]) -> str:
        key = "request_id" if table == "query_log" else "feedback_id"
        values = ", ".join(self._param_for(c) for c in columns)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({key}) DO NOTHING"
        )

    def _param_for(self, column: str) -> str:
        if column in JSON_COLUMNS:
            return self.json_param
        if column == "ts":
            return self.ts_param
        return self.param

    def _query_params(self, record: QueryRecord) -> tuple[Any, ...]:
        data = query_to_json(record)
        return tuple(
            self._scalar(data[c])
            if c not in JSON_COLUMNS or (data[c] is None and c in NULLABLE_JSON_COLUMNS)
            else self._json_text(data[c])
            for c in QUERY_COLUMNS
        )

    def _feedback_params(self, record: FeedbackRecord) -> tuple[Any, ...]:
        data = feedback_to_json(record)
        return tuple(self._scalar(data[c]) for c in FEEDBACK_COLUMNS)

    # -- reads -------------------------------------------------------------------------------

    async def has_request(self, request_id: str, tenant_id: str | None = None) -> bool:
        """Whether a query record with this request id (and, if given, tenant) is stored."""
        sql = f"SELECT 1 FROM query_log WHERE request_id = {self.param}"
        params: tuple[str, ...] = (request_id,)
        if tenant_id is not None:
            sql += f" AND tenant_id = {self.param}"
            params = (request_id, tenant_id)
        row = await self._run(self._read_pool, lambda c: c.execute(sql, params).fetchone())
        return row is not None

    def _where(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        equal: dict[str, str | None],
        after_id: int | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append(f"ts >= {self.ts_param}")
            params.append(ts_text(since))
        if until is not None:
            clauses.append(f"ts < {self.ts_param}")
            params.append(ts_text(until))
        for column, value in equal.items():
            if value is not None:
                clauses.append(f"{column} = {self.param}")
                params.append(value)
        if after_id is not None:
            clauses.append(f"id > {self.param}")
            params.append(after_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _select_queries(self, where: str, order: str, limit: int | None) -> str:
        sql = f"SELECT id, {', '.join(QUERY_COLUMNS)} FROM query_log{where} ORDER BY id {order}"
        return sql + (f" LIMIT {self.param}" if limit is not None else "")

    def _rows_to_queries(self, rows: list[Any]) -> list[tuple[int, QueryRecord]]:
        return [
            (int(row[0]), query_from_json(dict(zip(QUERY_COLUMNS, row[1:], strict=True))))
            for row in rows
        ]

    async def fetch_queries(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        final_tier: str | None = None,
        status: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[QueryRecord]:
        """Query records in [since, until), filtered, oldest first (or newest first)."""
        equal = {"kind": kind, "final_tier": final_tier, "status": status, "tenant_id": tenant_id}
        where, params = self._where(since=since, until=until, equal=equal)
        sql = self._select_queries(where, "DESC" if newest_first else "ASC", limit)
        if limit is not None:
            params.append(limit)
        rows = await self._run(self._read_pool, lambda c: c.execute(sql, params).fetchall())
        return [record for _, record in self._rows_to_queries(rows)]

    async def iter_queries(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 5000,
    ) -> AsyncIterator[QueryRecord]:
        """Every query record in [since, until), read page by page in insertion order."""
        after = 0
        while True:
            where, params = self._where(since=since, until=until, equal={}, after_id=after)
            sql = self._select_queries(where, "ASC", page_size)
            params.append(page_size)
            rows = await self._run(self._read_pool, _fetch_all(sql, params))
            page = self._rows_to_queries(rows)
            for _, record in page:
                yield record
            if len(page) < page_size:
                return
            after = page[-1][0]

    async def fetch_feedback(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[FeedbackRecord]:
        """Feedback in [since, until), oldest first."""
        where, params = self._where(since=since, until=until, equal={})
        sql = f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback{where} ORDER BY id"
        rows = await self._run(self._read_pool, lambda c: c.execute(sql, params).fetchall())
        return [feedback_from_json(dict(zip(FEEDBACK_COLUMNS, row, strict=True))) for row in rows]

    async def count_by(
        self,
        column: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
    ) -> dict[str, int]:
        """Query records per value of `column` (one of COUNTABLE_COLUMNS)."""
        if column not in COUNTABLE_COLUMNS:
            raise ValueError(f"cannot count by {column!r}; choose from {COUNTABLE_COLUMNS}")
        where, params = self._where(since=since, until=until, equal={"kind": kind})
        sql = f"SELECT {column}, COUNT(*) FROM query_log{where} GROUP BY {column}"
        rows = await self._run(self._read_pool, lambda c: c.execute(sql, params).fetchall())
        return {str(value): int(count) for value, count in rows}

    # -- tier labels (migration 0005) ----------------------------------------------------------

    async def write_tier_labels(self, labels: Sequence[TierLabel]) -> None:
        """Insert tier labels in one transaction; a (request_id, tier) already stored is kept."""
        if not labels:
            return
        values = ", ".join(
            self.json_param if c == "issues" else self.ts_param if c == "ts" else self.param
            for c in LABEL_COLUMNS
        )
        sql = (
            f"INSERT INTO tier_labels ({', '.join(LABEL_COLUMNS)}) VALUES ({values}) "
            "ON CONFLICT (request_id, tier) DO NOTHING"
        )

        def work(conn: Any) -> None:
            rows = []
            for label in labels:
                data = label_to_json(label)
                rows.append(
                    tuple(
                        self._json_text(data[c]) if c == "issues" else self._scalar(data[c])
                        for c in LABEL_COLUMNS
                    )
                )
            with self._transaction(conn, migration=False):
                cursor = conn.cursor()
                try:
                    cursor.executemany(sql, rows)
                finally:
                    cursor.close()

        await self._run(self._write_pool, work)

    async def fetch_tier_labels(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[TierLabel]:
        """Tier labels written in [since, until), oldest first."""
        where, params = self._where(since=since, until=until, equal={})
        sql = f"SELECT {', '.join(LABEL_COLUMNS)} FROM tier_labels{where} ORDER BY id"
        rows = await self._run(self._read_pool, _fetch_all(sql, params))
        return [label_from_json(dict(zip(LABEL_COLUMNS, row, strict=True))) for row in rows]


def _fetch_all(sql: str, params: Sequence[Any]) -> Callable[[Any], list[Any]]:
    def work(conn: Any) -> list[Any]:
        return list(conn.execute(sql, params).fetchall())

    return work
