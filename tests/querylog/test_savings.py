"""`tierroute report`'s savings section: what the labelled sample says routing saves against
the reference tier, with win, tie and loss rates and their intervals, on SQLite and
PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import pytest

from tests.helpers import make_settings
from tierroute.offline.cli.operations import add_report_parser
from tierroute.querylog import QueryRecord, TierLabel, open_store
from tierroute.querylog.savings import wilson

PRICE = {"cheap": 0.001, "mid": 0.003, "expensive": 0.01}
# (request id, kind, served tier, shadow tier, verdicts by tier); the last lacks mid's label.
CALLS: list[tuple[str, str, str, str, dict[str, str]]] = [
    ("q1", "cascade", "cheap", "", {"cheap": "pass", "mid": "pass", "expensive": "pass"}),
    ("q2", "cascade", "cheap", "", {"cheap": "fail", "mid": "pass", "expensive": "pass"}),
    ("q3", "cascade", "mid", "", {"cheap": "fail", "mid": "pass", "expensive": "fail"}),
    ("q4", "route", "expensive", "", {"cheap": "fail", "mid": "fail", "expensive": "pass"}),
    ("q5", "cascade", "expensive", "cheap", {"cheap": "pass", "mid": "fail", "expensive": "pass"}),
    ("q6", "cascade", "cheap", "", {"cheap": "pass", "expensive": "fail"}),
]


def _log() -> tuple[list[QueryRecord], list[TierLabel]]:
    queries, labels = [], []
    for rid, kind, tier, shadow, verdicts in CALLS:
        queries.append(
            QueryRecord(
                request_id=rid,
                kind=kind,  # type: ignore[arg-type]  # the fixture's literal kinds
                query_sha256=rid * 8,
                query_chars=10,
                chosen_tier=tier,
                final_tier=tier if kind == "cascade" else "",
                metadata={"shadow.tier": shadow} if shadow else {},
            )
        )
        for name, verdict in verdicts.items():
            labels.append(
                TierLabel(
                    request_id=rid,
                    tier=name,
                    model=f"{name}-model",
                    answer_text="The answer is (B).",
                    input_tokens=10,
                    output_tokens=10,
                    cost_usd=PRICE[name],
                    judge_tier="consensus",
                    judge_model="",
                    verdict=verdict,
                    # Judge spend is labelling's cost, not the answer's: never in the savings.
                    judge_cost_usd=0.5,
                )
            )
    return queries, labels


async def _write(url: str) -> None:
    store = open_store(url)
    try:
        await store.migrate()
        queries, labels = _log()
        await store.write_batch(queries, [])
        await store.write_tier_labels(labels)
    finally:
        await store.aclose()


def _report(url: str, capsys: pytest.CaptureFixture[str]) -> Any:
    asyncio.run(_write(url))
    parser = argparse.ArgumentParser(prog="tierroute")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--db", url, "--json"])
    assert args.func(args, make_settings(), {}) == 0
    return json.loads(capsys.readouterr().out)["savings"]


def _expected(savings: Any) -> None:
    # Routed: cheap, cheap, mid, expensive, cheap (q5's shadow decision); q6 is left out.
    assert savings["labelled_questions"] == 5
    assert savings["routed_by_tier"] == {"cheap": 3, "mid": 1, "expensive": 1}
    assert savings["routed_cost_usd"] == pytest.approx(0.016)
    assert savings["reference_cost_usd"] == pytest.approx(0.05)
    assert savings["savings"] == pytest.approx(0.68)
    assert (savings["win"]["count"], savings["tie"]["count"], savings["loss"]["count"]) == (1, 3, 1)
    # Wilson's 95 % interval of 1 in 5, from the published formula worked by hand.
    assert savings["win"]["low"] == pytest.approx(0.03622, abs=1e-4)
    assert savings["win"]["high"] == pytest.approx(0.62448, abs=1e-4)
    # Paired differences 0, -1, +1, 0, 0: mean 0, sample variance 0.5.
    assert savings["net_quality_points"] == pytest.approx(0.0)
    assert savings["net_quality_points_95"] == pytest.approx([-61.98, 61.98], abs=0.01)


def test_report_savings_from_sqlite(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The savings, rates and intervals of a hand-made labelled log on SQLite."""
    _expected(_report(f"sqlite:///{tmp_path / 'log.sqlite3'}", capsys))


@pytest.mark.postgres
def test_report_savings_from_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same log on PostgreSQL gives the same figures."""
    _expected(_report(pg_url, capsys))


def test_wilson_interval_of_no_successes_starts_at_zero() -> None:
    """0 in 10: the interval is [0, 0.2775], Wilson's published bound."""
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.27753, abs=1e-4)
