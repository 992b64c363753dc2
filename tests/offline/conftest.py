"""Fixtures of the offline tests: an empty query log on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierroute.querylog.doubles import reachable_postgres_url, temporary_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty query log: a SQLite file, or a fresh schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.sqlite3'}"
        return
    url = reachable_postgres_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (database test)")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    with temporary_schema(url) as schema_url:
        yield schema_url
