"""Opens the query-log store a URL names: SQLite (the default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tierroute.errors import ConfigError
from tierroute.querylog.store import Store, redact_url

DEFAULT_SQLITE_FILE = "tierroute-querylog.sqlite3"


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///relative` or `sqlite:////absolute` URL (empty: the default)."""
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    else:
        raise ConfigError(f"a SQLite URL looks like sqlite:///PATH, not {url!r}")
    # sqlite:///x -> "/x" -> relative "x"; sqlite:////abs/x -> "//abs/x" -> "/abs/x".
    path = rest[1:] if rest.startswith("/") else rest
    if "?" in path or path == ":memory:":
        raise ConfigError("the query log needs a SQLite file; options and :memory: are refused")
    return Path(path or DEFAULT_SQLITE_FILE)


def open_store(url: str, *, connect_timeout_s: float = 5.0) -> Store:
    """The store for `url`: `sqlite:///PATH` or `postgresql://...` (`postgres://` too)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from tierroute.querylog.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url), busy_timeout_s=connect_timeout_s)
    if scheme in ("postgresql", "postgres"):
        # Imported here so that SQLite deployments never load psycopg.
        from tierroute.querylog.postgres import PostgresStore

        return PostgresStore(url, connect_timeout_s=connect_timeout_s)
    raise ConfigError(
        f"unsupported query log URL {redact_url(url)!r}: use sqlite:///PATH or postgresql://..."
    )
