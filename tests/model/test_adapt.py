"""`model.adapt`: the evidence's correction of logged estimates, the re-solve, and reading
the estimates from a real SQLite file and the real PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.model.adapt_support import (
    SHIPPED,
    adapt_settings,
    planned_records,
    shipped_actions,
    shipped_top,
    shipped_version,
)
from tierroute.errors import ConfigError
from tierroute.model import ModelRegistry
from tierroute.model.adapt import LoggedEstimates, adapt, correct_row, figures_at, solve_points
from tierroute.model.operating import OPERATING_POINTS, PointTarget, action_choice
from tierroute.querylog import FeedbackRecord, PostgresStore, SqliteStore, Store, TierLabel
from tierroute.routing.plan import ACTIONS
from tierroute.settings import Settings

P = [0.6, 0.8, 0.7, 0.75, 0.85, 0.9]


def test_an_unjudged_action_takes_its_tier_s_observed_outcome() -> None:
    """A label on the cheap tier sets "cheap, unjudged" to 1; judged cheap actions keep theirs."""
    quality, used = correct_row(P, ACTIONS, 5, None, {0: (True, "label")})
    assert quality == [1.0, 0.8, 0.7, 0.75, 0.85, 0.9]
    assert used == {"label"}


def test_the_chosen_action_takes_the_outcome_of_the_answer_it_shipped() -> None:
    """Feedback that the mid tier's shipped answer was wrong sets the chosen action to 0 and
    "mid, unjudged" too; nothing else moves."""
    quality, used = correct_row(P, ACTIONS, 4, 1, {1: (False, "feedback")})
    assert quality == [0.6, 0.8, 0.7, 0.0, 0.0, 0.9]
    assert used == {"feedback"}


def test_without_evidence_the_estimates_stand() -> None:
    """No evidence: the row is the model's estimates, unchanged."""
    assert correct_row(P, ACTIONS, 2, 0, {}) == (P, set())


def estimates(n: int = 50) -> LoggedEstimates:
    """Easy traffic: cheap nearly as right as top and 20 times cheaper; all chosen top."""
    p = np.tile([0.92, 0.95, 0.94, 0.93, 0.95, 0.93], (n, 1))
    cost = np.tile([0.0002, 0.002, 0.001, 0.0008, 0.003, 0.004], (n, 1))
    return LoggedEstimates(p, cost, p.copy(), np.full(n, 5, dtype=np.int64))


def test_a_re_solved_floor_meets_its_target_on_the_logged_rows() -> None:
    """Each quality floor's new price meets it: expected quality >= its share of always-top's."""
    est = estimates()
    solved = solve_points(est, OPERATING_POINTS, actions=ACTIONS, top=5)
    for name in ("parity", "q95"):
        after = figures_at(est, solved[name].price_per_correct_usd, ACTIONS)
        assert solved[name].feasible
        assert after.quality >= OPERATING_POINTS[name].value * 0.93 - 1e-9


def test_parity_on_easy_traffic_is_cheaper_than_always_top() -> None:
    """Where a judged cheap start is as likely right as the top tier, parity stops buying the
    top tier: its expected cost falls below always-top's."""
    est = estimates()
    solved = solve_points(est, OPERATING_POINTS, actions=ACTIONS, top=5)
    assert figures_at(est, solved["parity"].price_per_correct_usd, ACTIONS).cost_usd < 0.004


def test_a_point_against_the_reference_tier_is_measured_against_it() -> None:
    """A floor relative to always-mid is met against always-mid's expected quality there."""
    est = estimates()
    mid_parity = {"mid_parity": PointTarget("min_quality", 1.0, reference=1, reference_name="mid")}
    solved = solve_points(est, mid_parity, actions=ACTIONS, top=5)
    after = figures_at(est, solved["mid_parity"].price_per_correct_usd, ACTIONS)
    assert solved["mid_parity"].feasible
    assert 0.93 <= after.quality < 0.95
    assert after.cost_usd < 0.004


def test_a_budget_meets_its_cost_limit() -> None:
    """third_cost's new price keeps the expected cost within a third of always-top's."""
    est = estimates()
    solved = solve_points(est, OPERATING_POINTS, actions=ACTIONS, top=5)
    after = figures_at(est, solved["third_cost"].price_per_correct_usd, ACTIONS)
    assert after.cost_usd <= 0.004 / 3


def test_an_action_a_row_could_not_take_is_never_chosen_there() -> None:
    """Rows whose plan excluded the cheap judged start never get it at any price."""
    est = estimates(10)
    allowed = np.ones((10, 6), dtype=bool)
    allowed[:5, 1] = False
    masked = LoggedEstimates(est.p, est.cost, est.quality, est.chosen, allowed=allowed)
    solved = solve_points(masked, OPERATING_POINTS, actions=ACTIONS, top=5)
    for point in solved.values():
        chosen = action_choice(masked.p, masked.cost, point.price_per_correct_usd, allowed)
        assert not (chosen[:5] == 1).any()


async def _adapt_dry(store: Store, tmp_path: Path, settings: Settings) -> dict[str, Any]:
    registry = ModelRegistry(tmp_path / "registry", seed=SHIPPED)
    result = await adapt(store, registry, settings, since=None, min_decisions=1, dry_run=True)
    return result.as_dict()


async def test_sqlite_log_feeds_adapt_with_evidence_counted(tmp_path: Path) -> None:
    """Planned Cascades on SQLite are read; a label, a feedback and a judge verdict each
    correct a row, and rows of another model are left out."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    store = SqliteStore(tmp_path / "log.sqlite3")
    await store.migrate()
    rows = planned_records(12, version=shipped_version())
    judged = {
        **rows[2].hops[0],
        "tier": "expensive",
        "role": "judge",
        "verdict": "fail",
        "model": "claude-opus-4-8",
    }
    rows[2] = replace(rows[2], hops=[rows[2].hops[0], judged])
    other = planned_records(3, version="some-other-model", prefix="o")
    await store.write_batch([*rows, *other], [FeedbackRecord(request_id="r-1", correct=True)])
    await store.write_tier_labels(
        [TierLabel("r-0", "cheap", "m", None, 1, 1, 0.0, "expensive", "m", "pass")]
    )
    document = await _adapt_dry(store, tmp_path, adapt_settings(url, tmp_path / "registry"))
    await store.aclose()
    assert document["rows"] == 12
    assert document["corrected_rows"] == {"label": 1, "feedback": 1, "judge": 1}
    assert document["skipped_rows"] == {
        "other_model": 3,
        "not_ok": 0,
        "malformed": 0,
        "unfamiliar": 0,
    }


async def test_postgres_log_feeds_adapt(pg_url: str, tmp_path: Path) -> None:
    """The same estimates on PostgreSQL give the same re-solved points as on SQLite."""
    records = planned_records(20, version=shipped_version())
    results = []
    for store in (PostgresStore(pg_url), SqliteStore(tmp_path / "log.sqlite3")):
        await store.migrate()
        await store.write_batch(records, [])
        settings = adapt_settings(pg_url, tmp_path / "registry")
        document = await _adapt_dry(store, tmp_path / type(store).__name__, settings)
        await store.aclose()
        results.append(json.dumps(document["points"], sort_keys=True))
    assert results[0] == results[1]
    assert json.loads(results[0])["parity"]["price_per_correct_usd"]["after"] > 0


def test_adapting_needs_a_registry_when_the_server_does_it(tmp_path: Path) -> None:
    """adapt.interval_s without a registry is a start-up error naming what is missing."""
    with pytest.raises(ConfigError, match=r"adapt.interval_s needs a model registry"):
        Settings.from_env({"TIERROUTE_ADAPT_INTERVAL_S": "60"})


def test_the_shipped_policy_has_the_actions_the_helpers_assume() -> None:
    """The helpers' made-up estimates line up with the shipped value policy's actions."""
    top = shipped_actions()[shipped_top()]
    assert (top.start, top.judge) == (2, "none")


async def test_a_point_already_meeting_its_target_keeps_its_price(tmp_path: Path) -> None:
    """Where the served price already meets parity on the log and no price does better,
    the point keeps its price (a grid price choosing the same actions is no change)."""
    store = SqliteStore(tmp_path / "log.sqlite3")
    await store.migrate()
    await store.write_batch(planned_records(30, version=shipped_version()), [])
    settings = adapt_settings(f"sqlite:///{tmp_path / 'log.sqlite3'}", tmp_path / "registry")
    document = await _adapt_dry(store, tmp_path, settings)
    await store.aclose()
    parity = document["points"]["parity"]["price_per_correct_usd"]
    assert parity["after"] == parity["before"]


async def test_unfamiliar_rows_count_only_with_evidence(tmp_path: Path) -> None:
    """Rows flagged unfamiliar are left out unless a label or feedback speaks for them."""
    store = SqliteStore(tmp_path / "log.sqlite3")
    await store.migrate()
    rows = [replace(r, unfamiliar=True) for r in planned_records(6, version=shipped_version())]
    await store.write_batch(rows, [FeedbackRecord(request_id="r-0", rating=5)])
    settings = adapt_settings(f"sqlite:///{tmp_path / 'log.sqlite3'}", tmp_path / "registry")
    document = await _adapt_dry(store, tmp_path, settings)
    await store.aclose()
    assert document["rows"] == 1
    assert document["skipped_rows"]["unfamiliar"] == 5
