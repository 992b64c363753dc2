"""`tierroute adapt` as the command runs it: the log on a SQLite file, the registry on disk,
before and after per operating point, exit codes and one-line refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.model.adapt_support import SHIPPED, copy_bundle, planned_records, shipped_version
from tierroute.__main__ import main
from tierroute.model import ModelRegistry
from tierroute.querylog import SqliteStore


async def logged(path: Path, n: int) -> str:
    """A SQLite log holding `n` planned Cascades of the shipped model; its URL."""
    store = SqliteStore(path)
    await store.migrate()
    await store.write_batch(planned_records(n, version=shipped_version()), [])
    await store.aclose()
    return f"sqlite:///{path}"


def run(db: str, registry: Path, *extra: str, seed: Path = SHIPPED) -> int:
    """`tierroute adapt` with the environment the command reads (no process environment)."""
    environ = {"TIERROUTE_MODEL_DIR": str(seed), "TIERROUTE_HTTP_PORT": "0"}
    argv = ["adapt", "--db", db, "--registry", str(registry), "--since", "all", *extra]
    return main(argv, environ)


async def test_adapt_prints_before_and_after_and_promotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json gives each point's price and expected figures before and after; the version it
    names is the registry's promoted one."""
    db = await logged(tmp_path / "log.sqlite3", 30)
    code = await asyncio.to_thread(
        run, db, tmp_path / "registry", "--min-decisions", "10", "--json"
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document["points"]) >= {"parity", "q95", "third_cost"}
    assert set(document["points"]["parity"]) >= {"price_per_correct_usd", "before", "after"}
    assert document["rows"] == 30
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.state().promoted == document["version"]
    assert document["version"].startswith(f"{shipped_version()}-adapt-")


async def test_the_text_report_has_a_line_per_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json each operating point gets a before -> after line, then the promotion."""
    db = await logged(tmp_path / "log.sqlite3", 30)
    code = await asyncio.to_thread(run, db, tmp_path / "registry", "--min-decisions", "10")
    out = capsys.readouterr().out
    assert code == 0
    for name in ("parity", "q95", "third_cost"):
        assert any(line.strip().startswith(name) and "->" in line for line in out.splitlines())
    assert "promoted " in out


async def test_too_few_decisions_exit_4_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fewer logged decisions than --min-decisions: exit 4, the seed stays promoted."""
    db = await logged(tmp_path / "log.sqlite3", 5)
    code = await asyncio.to_thread(run, db, tmp_path / "registry", "--min-decisions", "10")
    assert code == 4
    assert "fewer than 10" in capsys.readouterr().out
    assert ModelRegistry(tmp_path / "registry").state().promoted == shipped_version()


async def test_a_model_without_a_value_policy_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A served bundle with no value policy: exit 2 and one line saying why."""
    db = await logged(tmp_path / "log.sqlite3", 5)
    seed = copy_bundle(tmp_path / "plain", policy=None)
    code = await asyncio.to_thread(run, db, tmp_path / "registry", seed=seed)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("tierroute adapt: ")
    assert "no value policy" in err[0]


async def test_a_missing_log_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database with no query log in it: exit 1 naming it."""
    db = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    code = await asyncio.to_thread(run, db, tmp_path / "registry")
    assert code == 1
    assert "no query log" in capsys.readouterr().err
