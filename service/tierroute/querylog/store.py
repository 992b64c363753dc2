"""The one small Protocol every query-log store implements, its errors, and `open_store`.

Store errors sit under `TierrouteError` (see `tierroute.errors`):

    TierrouteError
    └── QueryLogError
        ├── StoreUnavailable   the database cannot be reached or used now; retry later
        └── StoreRejected      the database refused these rows; retrying cannot help

They never reach a gRPC caller: the writer turns them into spooling and retries, and the
`report` command into an exit code.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from tierroute.errors import TierrouteError
from tierroute.querylog.labels import TierLabel
from tierroute.querylog.records import FeedbackRecord, QueryRecord


class QueryLogError(TierrouteError):
    """Base of the query log's store errors."""


class StoreUnavailable(QueryLogError):
    """The database is unreachable or unusable right now; the same write may succeed later."""


class StoreRejected(QueryLogError):
    """The database refused the rows themselves (bad data); retrying them cannot help."""


# Columns a drift check may count by; anything else is refused before it reaches SQL.
# How long a store's close waits for a call stuck on a hung database before it abandons the
# call's worker thread (the stores' default close_timeout_s).
STORE_CLOSE_TIMEOUT_S = 5.0

COUNTABLE_COLUMNS = ("chosen_tier", "final_tier", "query_type", "strategy", "status", "kind")


class Store(Protocol):
    """Where query records and feedback are kept."""

    @property
    def display_url(self) -> str:
        """The store's URL with any password removed, for logs and messages."""
        ...

    async def migrate(self) -> int:
        """Apply missing migrations (safe to run from many processes at once); the version."""
        ...

    async def schema_version(self) -> int:
        """The highest applied migration, 0 when the log has never been created."""
        ...

    async def write_batch(
        self, queries: Sequence[QueryRecord], feedback: Sequence[FeedbackRecord]
    ) -> None:
        """Insert in one transaction; rows whose id is already stored are skipped."""
        ...

    async def has_request(self, request_id: str, tenant_id: str | None = None) -> bool:
        """Whether a query record with this request id (and, if given, tenant) is stored."""
        ...

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
        """Query records in [since, until), filtered, in insertion order (or newest first)."""
        ...

    def iter_queries(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 5000,
    ) -> AsyncIterator[QueryRecord]:
        """Every query record in [since, until), page by page, in insertion order."""
        ...

    async def fetch_feedback(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[FeedbackRecord]:
        """Feedback in [since, until), in insertion order."""
        ...

    async def count_by(
        self,
        column: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
    ) -> dict[str, int]:
        """Query records per value of `column` (one of COUNTABLE_COLUMNS), e.g. tier mix."""
        ...

    async def write_tier_labels(self, labels: Sequence[TierLabel]) -> None:
        """Insert `tierroute label`'s rows; a (request_id, tier) already stored is kept."""
        ...

    async def fetch_tier_labels(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[TierLabel]:
        """Tier labels written in [since, until), oldest first."""
        ...

    async def aclose(self) -> None:
        """Release connections and worker threads."""
        ...


def redact_url(url: str) -> str:
    """`url` with its password replaced, for logs and error messages."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            netloc = f"{parts.username or ''}:***@{host}"
            parts = parts._replace(netloc=netloc)
        query = re.sub(r"(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit(parts._replace(query=query))
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", url)
