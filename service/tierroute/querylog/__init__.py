"""The query log: every Route and Cascade call and every piece of feedback, kept for
reports, audits, drift checks and retraining.

Public surface:

- `QueryRecord`, `FeedbackRecord`, `HopRecord`, `hash_query`: what is logged.
- `QueryLogWriter`: non-blocking, loss-free batching writer for the RPC hot path.
- `Store`, `open_store`, `SqliteStore`, `PostgresStore`: where it is kept
  (`PostgresStore` loads psycopg on first use, so SQLite deployments never import it).
- `TierLabel`: one tier's answer to a logged question and the reference judge's verdict
  (`tierroute label`).
- `summarize`, `Report`: the figures `tierroute report` prints (`querylog.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierroute.querylog.factory import open_store
from tierroute.querylog.labels import TierLabel
from tierroute.querylog.records import FeedbackRecord, HopRecord, QueryRecord, hash_query
from tierroute.querylog.report import Report, ReportBuilder, summarize
from tierroute.querylog.sqlite import SqliteStore
from tierroute.querylog.store import QueryLogError, Store, StoreRejected, StoreUnavailable
from tierroute.querylog.writer import QueryLogWriter, WriterStats

if TYPE_CHECKING:
    from tierroute.querylog.postgres import PostgresStore

__all__ = [
    "FeedbackRecord",
    "HopRecord",
    "PostgresStore",
    "QueryLogError",
    "QueryLogWriter",
    "QueryRecord",
    "Report",
    "ReportBuilder",
    "SqliteStore",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "TierLabel",
    "WriterStats",
    "hash_query",
    "open_store",
    "summarize",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from tierroute.querylog.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
