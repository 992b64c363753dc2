"""The PostgreSQL query-log store, so that many replicas share one log.

Tables live in the connection's current schema (set `options=-csearch_path=...` in the URL
to choose one). Each worker thread keeps one psycopg connection and replaces it after a
connection-level failure. Migrations take a transaction-level advisory lock, so replicas
starting together migrate once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg

from tierroute.querylog._sql import SqlStore
from tierroute.querylog.store import (
    STORE_CLOSE_TIMEOUT_S,
    QueryLogError,
    StoreRejected,
    StoreUnavailable,
    redact_url,
)

logger = logging.getLogger(__name__)

# A statement that runs longer than this is cut off, so a stalled server cannot pin a
# worker thread (and with it the writer's shutdown) indefinitely.
STATEMENT_TIMEOUT_MS = 30_000


def _no_nul(value: Any) -> Any:
    # PostgreSQL text and jsonb cannot hold U+0000; store U+FFFD in its place.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, Mapping):
        return {k: _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


class PostgresStore(SqlStore):
    """Query log in PostgreSQL via psycopg 3."""

    dialect = "postgresql"
    param = "%s"
    json_param = "%s::jsonb"
    ts_param = "%s::timestamptz"
    migrations_table_ddl = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        close_timeout_s: float = STORE_CLOSE_TIMEOUT_S,
    ) -> None:
        super().__init__(redact_url(url), close_timeout_s=close_timeout_s)
        self._url = url
        # libpq counts whole seconds and treats values below 2 as 2.
        self._connect_timeout = max(2, math.ceil(connect_timeout_s))
        self._local = threading.local()

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            # Notice a dead peer (a dropped network path) within about 30 s, not hours.
            keepalives=1,
            keepalives_idle=15,
            keepalives_interval=5,
            keepalives_count=3,
            # Drop a connection whose sent data stays unacknowledged (Linux).
            tcp_user_timeout=30_000,
        )
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return conn

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
        self._local.conn = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._drop(conn)
            conn = self._connect()
            self._local.conn = conn
        try:
            yield conn
        except psycopg.Error as exc:
            if conn.broken or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self._drop(conn)
            raise

    @contextlib.contextmanager
    def _transaction(self, conn: Any, *, migration: bool) -> Iterator[None]:
        with conn.transaction():
            if migration:
                schema = conn.execute("SELECT current_schema()").fetchone()[0]
                if schema is None:
                    raise StoreUnavailable("no existing schema on the search_path")
                # One lock per schema: two logs in one database do not wait for each other.
                key = int.from_bytes(
                    hashlib.sha256(f"tierroute.querylog:{schema}".encode()).digest()[:8],
                    "big",
                    signed=True,
                )
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            yield

    def _has_table(self, conn: Any, name: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def _json_text(self, value: Any) -> str:
        text = super()._json_text(value)
        # A NUL anywhere inside shows up escaped; only then rewrite the value.
        return super()._json_text(_no_nul(value)) if "\\u0000" in text else text

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value

    def _translate(self, exc: Exception) -> QueryLogError | None:
        if not isinstance(exc, psycopg.Error):
            return None
        # A ProgrammingError without SQLSTATE was raised client-side, adapting a value.
        client_side = isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or client_side:
            # The server's message can quote row values (query text); keep it out.
            return StoreRejected(
                f"PostgreSQL refused the rows ({type(exc).__name__}, SQLSTATE {exc.sqlstate})"
            )
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            # Connection-level messages name hosts and causes, never row values.
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            return StoreUnavailable(f"PostgreSQL at {self.display_url} is unavailable: {reason}")
        return StoreUnavailable(
            f"PostgreSQL at {self.display_url} is unavailable "
            f"({type(exc).__name__}, SQLSTATE {exc.sqlstate})"
        )

    def _release_thread(self) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)
