"""Tenant state in the query log's database: spend, request rates, sessions, request ids.

`StateStore` runs every operation as one short transaction that holds the tenant's lock
(PostgreSQL: a transaction-level advisory lock per schema and tenant; SQLite: BEGIN
IMMEDIATE), so replicas sharing one PostgreSQL see one another's reservations at once. It
has its own connection on its own worker thread, apart from the query-log writer's queue:
a budget check waits for its answer, it is never batched. "memory" keeps the same tables in
an in-process SQLite database, for one process without a query log. Times are Unix seconds
from an injectable clock. Tables come from migration 0004 of the query log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tierroute.errors import ConfigError, TenancyUnavailable
from tierroute.querylog import open_store
from tierroute.querylog.migrations import load as load_migrations
from tierroute.querylog.store import QueryLogError, redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

MINUTE_S = 60.0
# Spend rows are kept this long, whatever a tenant's window (the longest window plus a day,
# so that lengthening a window on reload still finds the spend it covers).
KEEP_SPEND_S = 31 * 86_400.0
TENANCY_MIGRATION = 4


@dataclass(frozen=True)
class Spend:
    """A tenant's spend over a window: settled calls at their cost, running calls at their
    worst case, and when enough of it leaves the window to bring it to `target_usd`."""

    settled_usd: float
    reserved_usd: float
    calls: int
    frees_at: float | None

    @property
    def total_usd(self) -> float:
        """Settled plus reserved."""
        return self.settled_usd + self.reserved_usd


@dataclass(frozen=True)
class Rate:
    """A tenant's last minute: requests admitted and model tokens (running calls at their
    worst case), and when the oldest of each leaves the minute."""

    requests: int
    tokens: int
    requests_free_at: float | None
    tokens_free_at: float | None


@dataclass(frozen=True)
class Claim:
    """What a request id holds: "run" (this call runs it), "running", "done" or "mismatch"."""

    state: str
    result: bytes | None = None


class _Dialect:
    """SQLite: a file (a connection per transaction) or memory (one connection)."""

    param = "?"

    def __init__(self, path: Path | None, busy_timeout_s: float) -> None:
        self._path = path
        self._busy = busy_timeout_s
        self._memory: sqlite3.Connection | None = None
        if path is None:
            self._memory = sqlite3.connect(
                ":memory:", isolation_level=None, check_same_thread=False
            )
            for migration in load_migrations("sqlite"):
                if migration.version == TENANCY_MIGRATION:
                    for statement in migration.statements:
                        self._memory.execute(statement)

    @contextlib.contextmanager
    def transaction(self, tenant: str) -> Iterator[Any]:
        del tenant  # BEGIN IMMEDIATE serialises every writer of the file
        conn = self._memory or sqlite3.connect(
            self._path or ":memory:", timeout=self._busy, isolation_level=None
        )
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if conn is not self._memory:
                conn.close()

    def translate(self, exc: Exception) -> QueryLogError | None:
        del exc
        return None

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


class _Postgres:
    """PostgreSQL through psycopg 3: one connection, kept by the worker thread."""

    param = "%s"

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self._url = url
        self._timeout = max(2, int(connect_timeout_s + 0.999))
        self._conn: Any = None
        self._schema = ""

    def _connection(self) -> Any:
        import psycopg  # only PostgreSQL deployments load psycopg

        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=self._timeout)
            conn.execute("SET statement_timeout = 30000")
            row = conn.execute("SELECT current_schema()").fetchone()
            self._schema = (row[0] if row is not None else None) or ""
            self._conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self, tenant: str) -> Iterator[Any]:
        conn = self._connection()
        key = int.from_bytes(
            hashlib.sha256(f"tierroute.tenancy:{self._schema}:{tenant}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            yield conn

    def translate(self, exc: Exception) -> QueryLogError | None:
        import psycopg

        if isinstance(exc, psycopg.Error):
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self._conn = None
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return QueryLogError(reason)
        return None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class StateStore:
    """Tenant state over one worker thread and its connection; see the module docstring."""

    def __init__(
        self,
        dialect: _Dialect | _Postgres,
        display_url: str,
        *,
        migrate_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dialect
        self.display_url = display_url
        self._migrate_url = migrate_url
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenancy-state")
        self._q = "?" if dialect.param == "?" else "%s"
        self._migrated = False

    @classmethod
    def open(
        cls, url: str, *, connect_timeout_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> StateStore:
        """ "memory", sqlite:///PATH or postgresql://... (as the query log names them)."""
        if url == "memory":
            return cls(_Dialect(None, connect_timeout_s), "memory", clock=clock)
        scheme = url.split(":", 1)[0].lower()
        if scheme == "sqlite":
            from tierroute.querylog.factory import sqlite_path

            path = sqlite_path(url)
            return cls(
                _Dialect(path, connect_timeout_s), f"sqlite:///{path}", migrate_url=url, clock=clock
            )
        if scheme in ("postgresql", "postgres"):
            return cls(
                _Postgres(url, connect_timeout_s), redact_url(url), migrate_url=url, clock=clock
            )
        raise ConfigError(
            f"tenancy.state_url {redact_url(url)!r} is not memory, sqlite:///PATH or "
            "postgresql://..."
        )

    async def start(self) -> None:
        """Create the tables (the query log's migrations) unless they are in memory.

        A database that cannot be reached now is an outage, not a configuration error: the
        server starts, calls that need the state are UNAVAILABLE, and the next one tries
        again.
        """
        try:
            await self._ensure_tables()
        except TenancyUnavailable as exc:
            logger.warning("%s; retrying on the next call that needs it", exc)

    async def _ensure_tables(self) -> None:
        if self._migrated or self._migrate_url is None:
            return
        store = open_store(self._migrate_url)
        try:
            await store.migrate()
        except QueryLogError as exc:
            raise TenancyUnavailable(
                f"tenant state at {self.display_url} cannot be opened: {exc}"
            ) from exc
        finally:
            await store.aclose()
        self._migrated = True

    async def aclose(self) -> None:
        """Finish the operation running, then close the connection."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._db.close)
        self._pool.shutdown(wait=True)

    async def _run(self, tenant: str, work: Callable[[Any, float], T]) -> T:
        await self._ensure_tables()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, tenant, work)

    def _call(self, tenant: str, work: Callable[[Any, float], T]) -> T:
        try:
            with self._db.transaction(tenant) as conn:
                return work(conn, self._clock())
        except (sqlite3.Error, QueryLogError) as exc:
            raise TenancyUnavailable(
                f"tenant state at {self.display_url} is unavailable: {exc}"
            ) from exc
        except Exception as exc:
            translated = self._db.translate(exc)
            if translated is None:
                raise
            raise TenancyUnavailable(
                f"tenant state at {self.display_url} is unavailable: {translated}"
            ) from exc

    def _sql(self, text: str) -> str:
        return text if self._q == "?" else text.replace("?", "%s")

    # -- spend --------------------------------------------------------------------------

    def _spend(self, conn: Any, tenant: str, since: float, window_s: float, target: float) -> Spend:
        rows = conn.execute(
            self._sql(
                "SELECT ts, spent_usd, reserved_usd FROM tenant_spend "
                "WHERE tenant_id = ? AND ts > ? ORDER BY ts"
            ),
            (tenant, since),
        ).fetchall()
        settled = sum(float(r[1]) for r in rows if r[1] is not None)
        reserved = sum(float(r[2]) for r in rows if r[1] is None)
        excess = settled + reserved - target
        frees_at: float | None = None
        if excess > 0:
            freed = 0.0
            for ts, spent, worst in rows:
                freed += float(spent if spent is not None else worst)
                if freed >= excess - 1e-12:
                    frees_at = float(ts) + window_s
                    break
        return Spend(settled, reserved, len(rows), frees_at)

    async def spend(self, tenant: str, window_s: float, target_usd: float = 0.0) -> Spend:
        """The tenant's spend over the last `window_s`; `frees_at` is when it falls to
        `target_usd` as its oldest calls leave the window."""

        def work(conn: Any, now: float) -> Spend:
            return self._spend(conn, tenant, now - window_s, window_s, target_usd)

        return await self._run(tenant, work)

    async def reserve(
        self,
        tenant: str,
        request_id: str,
        tier: str,
        *,
        worst_usd: float,
        worst_tokens: int,
        budget_usd: float,
        window_s: float,
    ) -> tuple[str | None, Spend]:
        """Reserve a call's worst case; (None, spend) when it would take the window's spend
        past `budget_usd` (0 = record it without a limit)."""

        def work(conn: Any, now: float) -> tuple[str | None, Spend]:
            since = now - window_s
            target = max(budget_usd - worst_usd, 0.0)
            spend = self._spend(conn, tenant, since, window_s, target)
            if budget_usd > 0 and spend.total_usd + worst_usd > budget_usd + 1e-12:
                return None, spend
            reservation = uuid.uuid4().hex
            conn.execute(
                self._sql(
                    "INSERT INTO tenant_spend (reservation_id, tenant_id, request_id, tier, ts, "
                    "reserved_usd, spent_usd, tokens) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
                ),
                (reservation, tenant, request_id, tier, now, worst_usd, worst_tokens),
            )
            conn.execute(
                self._sql("DELETE FROM tenant_spend WHERE tenant_id = ? AND ts < ?"),
                (tenant, now - KEEP_SPEND_S),
            )
            return reservation, spend

        return await self._run(tenant, work)

    async def settle(self, tenant: str, reservation: str, spent_usd: float, tokens: int) -> None:
        """Replace a reservation's worst case with what the call really cost."""

        def work(conn: Any, now: float) -> None:
            del now
            conn.execute(
                self._sql(
                    "UPDATE tenant_spend SET spent_usd = ?, tokens = ? WHERE reservation_id = ?"
                ),
                (spent_usd, tokens, reservation),
            )

        await self._run(tenant, work)

    # -- rates --------------------------------------------------------------------------

    def _rate(self, conn: Any, tenant: str, now: float) -> Rate:
        since = now - MINUTE_S
        requests = conn.execute(
            self._sql(
                "SELECT COUNT(*), MIN(ts) FROM tenant_requests WHERE tenant_id = ? AND ts > ?"
            ),
            (tenant, since),
        ).fetchone()
        tokens = conn.execute(
            self._sql(
                "SELECT COALESCE(SUM(tokens), 0), MIN(ts) FROM tenant_spend "
                "WHERE tenant_id = ? AND ts > ?"
            ),
            (tenant, since),
        ).fetchone()
        return Rate(
            requests=int(requests[0]),
            tokens=int(tokens[0]),
            requests_free_at=float(requests[1]) + MINUTE_S if requests[1] is not None else None,
            tokens_free_at=float(tokens[1]) + MINUTE_S if tokens[1] is not None else None,
        )

    async def rate(self, tenant: str) -> Rate:
        """The tenant's last minute."""
        return await self._run(tenant, lambda conn, now: self._rate(conn, tenant, now))

    async def admit(
        self, tenant: str, *, requests_per_minute: int, tokens_per_minute: int
    ) -> tuple[bool, Rate]:
        """Count one request unless the last minute is at either limit (0 = none): whether
        it was admitted, and the minute as it stood."""

        def work(conn: Any, now: float) -> tuple[bool, Rate]:
            conn.execute(
                self._sql("DELETE FROM tenant_requests WHERE tenant_id = ? AND ts <= ?"),
                (tenant, now - MINUTE_S),
            )
            rate = self._rate(conn, tenant, now)
            if (requests_per_minute and rate.requests >= requests_per_minute) or (
                tokens_per_minute and rate.tokens >= tokens_per_minute
            ):
                return False, rate
            conn.execute(
                self._sql("INSERT INTO tenant_requests (tenant_id, ts) VALUES (?, ?)"),
                (tenant, now),
            )
            return True, rate

        return await self._run(tenant, work)

    # -- sessions -------------------------------------------------------------------------

    async def session(self, tenant: str, session_id: str) -> tuple[int, int | None]:
        """The session's floor tier and open agent loop's tier; (0, None) once it expired."""

        def work(conn: Any, now: float) -> tuple[int, int | None]:
            row = conn.execute(
                self._sql(
                    "SELECT floor_tier, loop_tier FROM tenant_sessions "
                    "WHERE tenant_id = ? AND session_id = ? AND expires_at > ?"
                ),
                (tenant, session_id, now),
            ).fetchone()
            if row is None:
                return 0, None
            return int(row[0]), (int(row[1]) if row[1] is not None else None)

        return await self._run(tenant, work)

    async def answered(
        self, tenant: str, session_id: str, tier: int, loop_tier: int | None, ttl_s: float
    ) -> None:
        """An answer came from tier `tier`: raise the floor to it, set or close the agent
        loop, and keep the session for `ttl_s` more."""

        def work(conn: Any, now: float) -> None:
            row = conn.execute(
                self._sql(
                    "SELECT floor_tier FROM tenant_sessions "
                    "WHERE tenant_id = ? AND session_id = ? AND expires_at > ?"
                ),
                (tenant, session_id, now),
            ).fetchone()
            floor = max(tier, int(row[0])) if row is not None else tier
            conn.execute(
                self._sql(
                    "DELETE FROM tenant_sessions WHERE tenant_id = ? "
                    "AND (session_id = ? OR expires_at <= ?)"
                ),
                (tenant, session_id, now),
            )
            conn.execute(
                self._sql(
                    "INSERT INTO tenant_sessions (tenant_id, session_id, floor_tier, loop_tier, "
                    "expires_at) VALUES (?, ?, ?, ?, ?)"
                ),
                (tenant, session_id, floor, loop_tier, now + ttl_s),
            )

        await self._run(tenant, work)

    # -- request ids ----------------------------------------------------------------------

    async def claim(self, tenant: str, request_id: str, fingerprint: str, lease_s: float) -> Claim:
        """Take a request id for one call to run, or say what holds it already.

        A running claim whose lease has passed (its replica died) is taken over.
        """

        def work(conn: Any, now: float) -> Claim:
            conn.execute(
                self._sql("DELETE FROM tenant_request_ids WHERE tenant_id = ? AND expires_at <= ?"),
                (tenant, now),
            )
            row = conn.execute(
                self._sql(
                    "SELECT fingerprint, state, result FROM tenant_request_ids "
                    "WHERE tenant_id = ? AND request_id = ?"
                ),
                (tenant, request_id),
            ).fetchone()
            if row is None:
                conn.execute(
                    self._sql(
                        "INSERT INTO tenant_request_ids (tenant_id, request_id, fingerprint, "
                        "state, result, expires_at) VALUES (?, ?, ?, 'running', NULL, ?)"
                    ),
                    (tenant, request_id, fingerprint, now + lease_s),
                )
                return Claim("run")
            if row[0] != fingerprint:
                return Claim("mismatch")
            if row[1] == "done":
                return Claim("done", bytes(row[2]))
            return Claim("running")

        return await self._run(tenant, work)

    async def record(self, tenant: str, request_id: str, result: bytes, ttl_s: float) -> None:
        """The claimed call ended with `result`: kept for repeats for `ttl_s`."""

        def work(conn: Any, now: float) -> None:
            conn.execute(
                self._sql(
                    "UPDATE tenant_request_ids SET state = 'done', result = ?, expires_at = ? "
                    "WHERE tenant_id = ? AND request_id = ?"
                ),
                (result, now + ttl_s, tenant, request_id),
            )

        await self._run(tenant, work)

    async def release(self, tenant: str, request_id: str) -> None:
        """The claimed call failed: the id is free for a retry to run afresh."""

        def work(conn: Any, now: float) -> None:
            del now
            conn.execute(
                self._sql(
                    "DELETE FROM tenant_request_ids WHERE tenant_id = ? AND request_id = ? "
                    "AND state = 'running'"
                ),
                (tenant, request_id),
            )

        await self._run(tenant, work)
