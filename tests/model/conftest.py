"""Fixtures of the model tests: a fresh PostgreSQL schema, as the query-log tests have it
(the adapt tests read logged estimates from the real PostgreSQL too)."""

from tests.querylog.conftest import pg_base_url, pg_url

__all__ = ["pg_base_url", "pg_url"]
