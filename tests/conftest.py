"""Shared fixtures: data files, and the rule for tests that need the real dev data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures import cascade_records, make_records, write_dataset
from tierroute.outcomes import default_data_path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real dev file; skipped when absent, except under CI where absence fails."""
    path = default_data_path(os.environ)
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the real data file at {path}")
        pytest.skip(f"real data not present at {path}")
    return path


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-record synthetic file in the shared schema (both trios on every record)."""
    path = tmp_path_factory.mktemp("data") / "small.jsonl.gz"
    return write_dataset(path, make_records(300, claude=True))


@pytest.fixture
def replay_data(tmp_path: Path) -> Path:
    """A 60-record file for a server's replay backend, each wrong tier with its own answer."""
    return write_dataset(tmp_path / "replay.jsonl.gz", cascade_records())
