"""The SQLite query-log store: one local file in WAL mode, the zero-set-up default.

Each operation opens its own connection on a worker thread. That costs well under a
millisecond per batch and makes failures honest: a file that became unreachable fails the
next batch instead of being written through a stale handle.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tierroute.querylog._sql import SqlStore
from tierroute.querylog.store import (
    STORE_CLOSE_TIMEOUT_S,
    QueryLogError,
    StoreRejected,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)


class SqliteStore(SqlStore):
    """Query log in a SQLite file; its directory must exist."""

    dialect = "sqlite"
    param = "?"
    json_param = "?"
    ts_param = "?"
    migrations_table_ddl = (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 5.0,
        close_timeout_s: float = STORE_CLOSE_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        super().__init__(f"sqlite:///{self.path}", close_timeout_s=close_timeout_s)
        self._busy_timeout_s = busy_timeout_s
        self._warned_journal = False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are the explicit BEGIN/COMMIT below.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._switch_to_wal(conn)
            # A committed batch must survive a power loss, not only a process crash.
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        # WAL is a property of the file, set once. Switching needs an exclusive lock and
        # SQLite answers "locked" at once, without its busy handler, when a second
        # connection is switching at the same moment: retry within the busy timeout.
        deadline = time.monotonic() + self._busy_timeout_s
        delay = 0.005
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            if mode != "wal" and not self._warned_journal:
                self._warned_journal = True
                logger.warning("SQLite at %s refused WAL mode (using %s)", self.path, mode)
            return

    @contextlib.contextmanager
    def _transaction(self, conn: Any, *, migration: bool) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front: a second migrator waits here (busy
        # timeout) and then sees the first one's work, instead of failing on an upgrade.
        del migration
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _has_table(self, conn: Any, name: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def _translate(self, exc: Exception) -> QueryLogError | None:
        # Our SQL is fixed, so binding and constraint errors come from the rows' values.
        if isinstance(
            exc,
            sqlite3.IntegrityError
            | sqlite3.DataError
            | sqlite3.ProgrammingError
            | sqlite3.InterfaceError
            | OverflowError,
        ):
            return StoreRejected(f"SQLite refused the rows ({type(exc).__name__}: {exc})")
        if isinstance(exc, sqlite3.Error):
            # Locked, unopenable, read-only, disk full, corrupt: the rows are fine, the
            # file is not; keep them and retry later.
            return StoreUnavailable(f"SQLite at {self.path} is unavailable: {exc}")
        return None
