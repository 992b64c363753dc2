"""`tierroute report`: figures checked against values worked out by hand on a small log.

The hand log (tiers cheap < mid < expensive), answered calls R1-R6:

    id  final      hops (tier/model role outcome tokens in+out cost)          total   esc
    R1  cheap      cheap/haiku answer ok 100+50 .001                           .001    no
    R2  cheap      cheap/haiku answer ok 200+100 .002, mid/sonnet judge pass   .005    no
                   300+20 .003
    R3  mid        cheap/haiku answer ok 100+100 .001, mid/sonnet judge fail   .013    yes
                   200+20 .002, mid/sonnet answer ok 400+200 .010
    R4  mid        mid/sonnet answer ok 500+300 .012, expensive/opus judge     .032    no
                   pass .020
    R5  expensive  expensive/opus answer ok 1000+500 .050                      .050    no
    R6  mid        cheap/haiku answer error .0, mid/sonnet-4 answer ok         .003    yes
                   100+100 .003

plus R7 and R9 (Route only: cheap, mid) and R8 (INVALID_ARGUMENT). Feedback: R1 rating 5;
R2 rating 3 then, later, 4; R3 rating 2; R4 correct; R5 rating 1 and incorrect.

By hand: 6 answered, total cost .104, 2 escalated. Tokens of the final answers: 150, 300,
600, 800, 1500, 200. Ratings counted: 5, 4, 2, 1 -> 3.0. Cheap-tier opportunity: R4 and R5
never tried cheap, R6's cheap call failed -> 3 of the 4 answered above cheap; 3/6 = 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import postgres_or_skip
from tierroute.errors import ConfigError
from tierroute.offline.cli.operations import add_report_parser, parse_since
from tierroute.querylog import FeedbackRecord, HopRecord, QueryRecord, summarize
from tierroute.querylog.doubles import sample_record, temporary_schema
from tierroute.querylog.factory import open_store
from tierroute.querylog.report import is_cheap_opportunity, p95
from tierroute.querylog.sqlite import SqliteStore
from tierroute.settings import Settings

TIERS = ("cheap", "mid", "expensive")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HAIKU, SONNET, SONNET4, OPUS = "haiku", "sonnet", "sonnet-4", "opus"


def hop(
    tier: str,
    model: str,
    role: str,
    tokens: tuple[int, int],
    cost: float,
    *,
    outcome: str = "ok",
    verdict: str = "",
) -> HopRecord:
    """One logged hop."""
    return {
        "tier": tier, "model": model, "role": role, "outcome": outcome,
        "input_tokens": tokens[0], "output_tokens": tokens[1], "cost_usd": cost,
        "latency_ms": 100.0, "verdict": verdict, "issues": [], "attempt": 1,
        "speculative": False, "error_kind": "" if outcome == "ok" else "server_error",
    }  # fmt: skip


def call(rid: str, i: int, final: str, hops: list[HopRecord], **changes: Any) -> QueryRecord:
    """An answered cascade call, its total cost the sum of its hops."""
    return sample_record(
        rid,
        ts=T0 + timedelta(minutes=i),
        final_tier=final,
        hops=hops,
        total_cost_usd=round(sum(h["cost_usd"] for h in hops), 10),
        **changes,
    )


def hand_log() -> tuple[list[QueryRecord], list[FeedbackRecord]]:
    """The log in the module docstring."""
    queries = [
        call("R1", 1, "cheap", [hop("cheap", HAIKU, "answer", (100, 50), 0.001)]),
        call(
            "R2",
            2,
            "cheap",
            [
                hop("cheap", HAIKU, "answer", (200, 100), 0.002),
                hop("mid", SONNET, "judge", (300, 20), 0.003, verdict="pass"),
            ],
        ),
        call(
            "R3",
            3,
            "mid",
            [
                hop("cheap", HAIKU, "answer", (100, 100), 0.001),
                hop("mid", SONNET, "judge", (200, 20), 0.002, verdict="fail"),
                hop("mid", SONNET, "answer", (400, 200), 0.010),
            ],
            escalated=True,
        ),
        call(
            "R4",
            4,
            "mid",
            [
                hop("mid", SONNET, "answer", (500, 300), 0.012),
                hop("expensive", OPUS, "judge", (600, 30), 0.020, verdict="JUDGE_VERDICT_PASS"),
            ],
            chosen_tier="mid",
        ),
        call(
            "R5",
            5,
            "expensive",
            [hop("expensive", OPUS, "HOP_ROLE_ANSWER", (1000, 500), 0.050)],
            chosen_tier="expensive",
        ),
        call(
            "R6",
            6,
            "mid",
            [
                hop("cheap", HAIKU, "answer", (0, 0), 0.0, outcome="error"),
                hop("mid", SONNET4, "answer", (100, 100), 0.003),
            ],
            escalated=True,
        ),
        sample_record("R7", ts=T0 + timedelta(minutes=7), kind="route", chosen_tier="cheap"),
        sample_record("R8", ts=T0 + timedelta(minutes=8), status="INVALID_ARGUMENT"),
        sample_record("R9", ts=T0 + timedelta(minutes=9), kind="route", chosen_tier="mid"),
    ]
    feedback = [
        FeedbackRecord("R1", ts=T0 + timedelta(hours=1), rating=5),
        FeedbackRecord("R2", ts=T0 + timedelta(hours=1), rating=3),
        FeedbackRecord("R2", ts=T0 + timedelta(hours=2), rating=4),
        FeedbackRecord("R3", ts=T0 + timedelta(hours=1), rating=2),
        FeedbackRecord("R4", ts=T0 + timedelta(hours=1), correct=True),
        FeedbackRecord("R5", ts=T0 + timedelta(hours=1), rating=1, correct=False),
    ]
    return queries, feedback


def expected_json() -> dict[str, Any]:
    """The hand-computed figures, as `--json` prints them (floats compared approximately)."""
    return {
        "total_queries": 6,
        "total_cost_usd": 0.104,
        "avg_cost_usd": 0.104 / 6,
        "escalation_rate": 2 / 6,
        "avg_rating": 3.0,
        "p95_tokens": 1500,
        "by_tier": {
            "cheap": {
                "queries": 2, "share": 2 / 6, "total_cost_usd": 0.006, "avg_cost_usd": 0.003,
                "avg_rating": 4.5, "rated": 2, "user_correct_rate": None, "p95_tokens": 300,
                "escalation_rate": 0.0,
            },
            "mid": {
                "queries": 3, "share": 0.5, "total_cost_usd": 0.048, "avg_cost_usd": 0.016,
                "avg_rating": 2.0, "rated": 1, "user_correct_rate": 1.0, "p95_tokens": 800,
                "escalation_rate": 2 / 3,
            },
            "expensive": {
                "queries": 1, "share": 1 / 6, "total_cost_usd": 0.05, "avg_cost_usd": 0.05,
                "avg_rating": 1.0, "rated": 1, "user_correct_rate": 0.0, "p95_tokens": 1500,
                "escalation_rate": 0.0,
            },
        },
        "by_model": {
            HAIKU: {
                "queries": 2, "share": 2 / 6, "total_cost_usd": 0.006, "avg_cost_usd": 0.003,
                "avg_rating": 4.5, "rated": 2, "user_correct_rate": None, "p95_tokens": 300,
                "escalation_rate": 0.0,
            },
            OPUS: {
                "queries": 1, "share": 1 / 6, "total_cost_usd": 0.05, "avg_cost_usd": 0.05,
                "avg_rating": 1.0, "rated": 1, "user_correct_rate": 0.0, "p95_tokens": 1500,
                "escalation_rate": 0.0,
            },
            SONNET: {
                "queries": 2, "share": 2 / 6, "total_cost_usd": 0.045, "avg_cost_usd": 0.0225,
                "avg_rating": 2.0, "rated": 1, "user_correct_rate": 1.0, "p95_tokens": 800,
                "escalation_rate": 0.5,
            },
            SONNET4: {
                "queries": 1, "share": 1 / 6, "total_cost_usd": 0.003, "avg_cost_usd": 0.003,
                "avg_rating": None, "rated": 0, "user_correct_rate": None, "p95_tokens": 200,
                "escalation_rate": 1.0,
            },
        },
        "spend_by_model": {HAIKU: 0.004, OPUS: 0.07, SONNET: 0.027, SONNET4: 0.003},
        "cheap_tier": "cheap",
        "above_cheap_queries": 4,
        "cheap_tier_opportunity_queries": 3,
        "cheap_tier_opportunity": 0.5,
        "route_decisions": {"count": 2, "by_tier": {"cheap": 1, "mid": 1}},
        "failed_calls": {"INVALID_ARGUMENT": 1},
        "unfamiliar_by_day": {},
    }  # fmt: skip


def approx(value: Any) -> Any:
    """`value` with every float wrapped in pytest.approx, recursively."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    return value


def report_args(argv: list[str], settings: Settings) -> argparse.Namespace:
    """Parse `argv` through a real subparsers object, as `__main__` does."""
    parser = argparse.ArgumentParser(prog="tierroute")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    parser.set_defaults(settings=settings)
    return parser.parse_args(argv)


async def write_log(url: str) -> None:
    """Store the hand log at `url`."""
    store = open_store(url)
    await store.migrate()
    queries, feedback = hand_log()
    await store.write_batch(queries, feedback)
    await store.aclose()


@pytest.fixture
def settings() -> Settings:
    """Shipped settings: tiers cheap, mid, expensive."""
    return Settings.from_env({})


# -- the pure aggregation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([7], 7), (list(range(1, 21)), 19), (list(range(1, 22)), 20), ([5, 1], 5)],
)
def test_p95_is_nearest_rank(values: list[int], expected: int | None) -> None:
    """p95 is the ceil(0.95 n)-th smallest value."""
    assert p95(values) == expected


def test_summary_matches_hand_computed_figures() -> None:
    """Every figure of the hand log equals the value worked out by hand."""
    queries, feedback = hand_log()
    assert summarize(queries, feedback, TIERS).to_json() == approx(
        {"since": None, "until": None, **expected_json()}
    )


@pytest.mark.parametrize(
    ("rid", "expected"),
    [("R1", False), ("R2", False), ("R3", False), ("R4", True), ("R5", True), ("R6", True)],
)
def test_cheap_tier_opportunity_per_call(rid: str, expected: bool) -> None:
    """Above-cheap answers count unless a completed cheap answer was judged and failed."""
    record = next(q for q in hand_log()[0] if q.request_id == rid)
    assert is_cheap_opportunity(record, TIERS) is expected


def test_cheap_answer_passed_above_cheap_is_an_opportunity() -> None:
    """A mid answer returned although the judge passed the cheap one counts as opportunity."""
    record = call(
        "S",
        0,
        "mid",
        [
            hop("cheap", HAIKU, "answer", (10, 10), 0.001),
            hop("mid", SONNET, "answer", (10, 10), 0.002),
            hop("mid", SONNET, "judge", (10, 10), 0.002, verdict="pass"),
        ],
    )
    assert is_cheap_opportunity(record, TIERS)


def test_latest_rating_wins() -> None:
    """When a request is rated twice, the later rating counts."""
    queries, feedback = hand_log()
    report = summarize(queries, reversed(feedback), TIERS)
    assert report.by_tier["cheap"].avg_rating == 4.5


def test_empty_log_gives_zeros() -> None:
    """An empty log reports zero queries without dividing by zero."""
    report = summarize([], [], TIERS)
    assert (report.total_queries, report.cheap_tier_opportunity) == (0, 0.0)
    assert report.by_tier["mid"].avg_rating is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", datetime(2025, 2, 22, 12, 0, tzinfo=UTC)),
        ("12h", datetime(2025, 3, 1, 0, 0, tzinfo=UTC)),
        ("90m", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
        ("2w", datetime(2025, 2, 15, 12, 0, tzinfo=UTC)),
        ("2025-02-01", datetime(2025, 2, 1, tzinfo=UTC)),
        ("2025-02-01T10:00:00+02:00", datetime(2025, 2, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    """--since takes a duration before now or an ISO date/datetime (UTC when naive)."""
    assert parse_since(text, now=T0) == expected


def test_parse_since_refuses_nonsense() -> None:
    """An unreadable --since is a configuration error with a readable message."""
    with pytest.raises(ConfigError, match="duration"):
        parse_since("last tuesday", now=T0)


# -- the command ---------------------------------------------------------------------------


def test_report_json_from_sqlite(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --json` on a SQLite log prints the hand-computed figures."""
    url = f"sqlite:///{tmp_path}/log.sqlite3"
    asyncio.run(write_log(url))
    args = report_args(["report", "--db", url, "--json"], settings)
    assert args.func(args, args.settings, {}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == approx({"since": None, "until": None, **expected_json()})


def test_report_reads_db_url_from_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --db the report reads TIERROUTE_DB_URL through the settings."""
    url = f"sqlite:///{tmp_path}/log.sqlite3"
    asyncio.run(write_log(url))
    args = report_args(["report", "--json"], Settings.from_env({"TIERROUTE_DB_URL": url}))
    assert args.func(args, args.settings, {}) == 0
    assert json.loads(capsys.readouterr().out)["total_queries"] == 6


def test_report_since_narrows_the_window(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since drops older calls: from R4 on, 3 answered calls (R4, R5, R6) remain."""
    url = f"sqlite:///{tmp_path}/log.sqlite3"
    asyncio.run(write_log(url))
    args = report_args(
        ["report", "--db", url, "--since", "2025-03-01T12:04:00", "--json"], settings
    )
    assert args.func(args, args.settings, {}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["total_queries"], printed["total_cost_usd"]) == (3, pytest.approx(0.085))


def test_report_table_is_readable(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table names every tier and model with its query count and the opportunity."""
    url = f"sqlite:///{tmp_path}/log.sqlite3"
    asyncio.run(write_log(url))
    args = report_args(["report", "--db", url], settings)
    assert args.func(args, args.settings, {}) == 0
    out = capsys.readouterr().out
    tables = out.split("SPEND BY MODEL")[0]
    lines = {line.split()[0]: line.split() for line in tables.splitlines() if line.strip()}
    assert lines["mid"][1:3] == ["3", "50.0"]
    assert lines["sonnet-4"][1] == "1"
    assert "cheap-tier opportunity: 50.0 %" in out


def test_report_on_missing_log_exits_1(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database without a query log is reported on stderr with exit code 1."""
    args = report_args(["report", "--db", f"sqlite:///{tmp_path}/empty.sqlite3"], settings)
    assert args.func(args, args.settings, {}) == 1
    assert "no query log" in capsys.readouterr().err


def test_report_bad_since_exits_2(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --since exits 2 with the reason."""
    args = report_args(["report", "--db", "sqlite:///x.sqlite3", "--since", "soon"], settings)
    assert args.func(args, args.settings, {}) == 2
    assert "--since" in capsys.readouterr().err


@pytest.mark.postgres
def test_report_on_postgres_equals_sqlite(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same log gives the same report from PostgreSQL as from SQLite."""
    base = postgres_or_skip()
    with temporary_schema(base) as url:
        asyncio.run(write_log(url))
        args = report_args(["report", "--db", url, "--json"], settings)
        assert args.func(args, args.settings, {}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == approx({"since": None, "until": None, **expected_json()})


def test_sqlite_store_class_is_the_default(tmp_path: Path) -> None:
    """sqlite:/// URLs open the SQLite store on the named file."""
    store = open_store(f"sqlite:///{tmp_path}/x.sqlite3")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "x.sqlite3"
