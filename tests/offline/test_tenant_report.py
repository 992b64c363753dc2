"""`tierroute report --tenant ID`: a tenant's spend against its budget, read from the tenant
state the server wrote."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from tests.helpers import running_server
from tests.tenancy.serving import CHEAP, COST, EASY, SPENT, cheap_call, tenant_settings
from tierroute.offline.cli.operations import add_report_parser
from tierroute.providers.scripted import ScriptedProvider
from tierroute.settings import Settings

TENANTS = '[tenants.acme]\nbudget_usd = 0.05\nbudget_window = "30d"\nrequests_per_minute = 10\n'


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tierroute")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def _spend_twice(settings: Settings) -> None:
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT]})
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        for _ in range(2):
            await s.stub.Cascade(cheap_call())


def test_report_tenant_shows_spend_against_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two answered calls: their cost of the $0.05 budget over 30d, two requests this minute."""
    settings = tenant_settings(tmp_path, TENANTS)
    asyncio.run(_spend_twice(settings))
    args = _args(["report", "--tenant", "acme", "--json"])
    assert args.func(args, settings, {}) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tenant"] == "acme"
    assert (report["budget_usd"], report["budget_window"]) == (0.05, "30d")
    assert report["spent_usd"] == pytest.approx(2 * COST)
    assert report["reserved_usd"] == 0
    assert report["remaining_usd"] == pytest.approx(0.05 - 2 * COST)
    assert (report["calls_in_window"], report["requests_last_minute"]) == (2, 2)
    assert not report["over_budget"]


def test_report_tenant_prints_a_readable_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json the report is a few lines naming the spend, the budget and the minute."""
    settings = tenant_settings(tmp_path, TENANTS)
    asyncio.run(_spend_twice(settings))
    args = _args(["report", "--tenant", "acme"])
    assert args.func(args, settings, {}) == 0
    out = capsys.readouterr().out
    assert f"spend   ${2 * COST:.4f} of $0.05 over 30d" in out
    assert "2 requests of 10" in out


def test_report_tenant_of_a_memory_state_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state kept in a server's memory cannot be read from outside: exit 2, one line."""
    settings = tenant_settings(tmp_path, TENANTS, TIERROUTE_TENANCY_STATE_URL="memory")
    args = _args(["report", "--tenant", "acme"])
    assert args.func(args, settings, {}) == 2
    assert "memory" in capsys.readouterr().err
