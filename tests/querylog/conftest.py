"""Fixtures of the query-log tests: a SQLite file and a fresh PostgreSQL schema per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import postgres_or_skip
from tierroute.querylog.doubles import temporary_schema


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    """A query-log file path in its own directory (which a test may take away)."""
    folder = tmp_path / "db"
    folder.mkdir()
    return folder / "querylog.sqlite3"


@pytest.fixture(scope="module")
def pg_base_url() -> str:
    """The test PostgreSQL; skipped when unreachable, except under CI where that fails."""
    return postgres_or_skip()


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A URL bound to a fresh schema that is dropped after the test."""
    with temporary_schema(pg_base_url) as url:
        yield url
