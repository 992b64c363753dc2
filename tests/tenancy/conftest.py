"""Fixtures of the tenancy tests: the query-log tests' SQLite file and PostgreSQL schema."""

from tests.querylog.conftest import pg_base_url, pg_url, sqlite_file

__all__ = ["pg_base_url", "pg_url", "sqlite_file"]
