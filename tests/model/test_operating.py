"""Prices and operating points served with numpy only: the ladder, the stored calibration
data a bundle re-solves its operating points from, and its load errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierroute.errors import ModelLoadError
from tierroute.model.operating import (
    OPERATING_POINTS,
    CalibrationData,
    Ladder,
    action_choice,
    parse_points,
    reference_points,
    solve_price,
)
from tierroute.settings import TierConfig

A, T, N = 6, 3, 40
TOP = 5
TIERS = (
    TierConfig("cheap", "c", 1.0, 5.0, cache_write_multiplier=1.25, cache_read_multiplier=0.1),
    TierConfig("mid", "m", 3.0, 15.0, cache_write_multiplier=2.0, cache_read_multiplier=0.5),
    TierConfig("expensive", "e", 5.0, 25.0),
)


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "oof_p": rng.random((N, A)),
        "oof_tokens": rng.random((N, A, T, 2)) * 500,
        "quality": (rng.random((N, A)) < 0.6).astype(np.int8),
        "tokens": rng.integers(0, 500, (N, A, T, 4)).astype(np.int32),
    }


def _save(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _load(path: Path) -> CalibrationData:
    return CalibrationData.load(path, n_actions=A, n_tiers=T, top_action=TOP)


def test_the_ladder_prices_tokens_as_the_tier_bills_a_call() -> None:
    """Input, output and both cache kinds priced per tier equal TierConfig.cost_usd."""
    tokens = np.array([[1200, 340, 50, 900], [10, 20, 30, 40], [7, 0, 0, 0]])
    expected = sum(t.cost_usd(*map(int, row)) for t, row in zip(TIERS, tokens, strict=True))
    assert Ladder.of(TIERS).price(tokens) == pytest.approx(expected, rel=1e-12)


def test_stored_data_round_trips(tmp_path: Path) -> None:
    """What `save` writes, `load` reads back with its shapes checked."""
    arrays = _arrays(np.random.default_rng(1))
    data = CalibrationData(**{k: v.astype(np.float64) for k, v in arrays.items()}, top_action=TOP)
    data.save(tmp_path / "c.npz")
    loaded = _load(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.tokens, arrays["tokens"])
    np.testing.assert_allclose(loaded.oof_p, arrays["oof_p"], rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"oof_p": None}, "missing array"),
        ({"oof_tokens": np.zeros((N, A, T, 3))}, "oof_tokens"),
        ({"tokens": np.zeros((N + 1, A, T, 4))}, "'tokens' has shape"),
        ({"quality": np.zeros((N, A - 1))}, "'quality' has shape"),
        ({"oof_tokens": -np.ones((N, A, T, 2))}, "negative or non-finite"),
        ({"oof_p": np.full((N, A), np.nan)}, "negative or non-finite"),
        ({"oof_p": np.full((N, A), 1.5)}, "outside"),
        ({"quality": np.full((N, A), 2)}, "outside"),
    ],
)
def test_malformed_stored_predictions_are_load_errors(
    tmp_path: Path, change: dict[str, np.ndarray | None], message: str
) -> None:
    """Missing arrays, wrong shapes and impossible values fail loading, naming the file."""
    arrays = _arrays(np.random.default_rng(2))
    for name, value in change.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    path = _save(tmp_path / "c.npz", **arrays)
    with pytest.raises(ModelLoadError, match=message) as err:
        _load(path)
    assert str(path) in str(err.value)


def test_a_file_that_is_not_an_npz_is_a_load_error(tmp_path: Path) -> None:
    """Bytes that are no archive are refused with the file named, not a traceback."""
    path = tmp_path / "c.npz"
    path.write_bytes(b"not an archive at all")
    with pytest.raises(ModelLoadError, match=r"not a readable \.npz"):
        _load(path)


def test_an_archive_holding_pickles_is_refused(tmp_path: Path) -> None:
    """Object arrays (pickles) are never loaded from a bundle."""
    arrays: dict[str, np.ndarray] = dict(_arrays(np.random.default_rng(3)))
    arrays["oof_p"] = np.array([{"x": 1}] * N, dtype=object)
    with pytest.raises(ModelLoadError):
        _load(_save(tmp_path / "c.npz", **arrays))


def test_every_operating_point_meets_its_target() -> None:
    """On the rows it was solved on, each point meets its target against always-top."""
    rng = np.random.default_rng(4)
    arrays = _arrays(rng)
    # Dearer actions are more often right: a real trade-off to solve.
    quality = (rng.random((400, A)) < np.linspace(0.3, 0.9, A)).astype(np.float64)
    tokens = np.zeros((400, A, T, 4))
    for a in range(A):
        tokens[:, a, min(a // 2, 2), :2] = 200 + 100 * a
    data = CalibrationData(
        oof_p=np.clip(quality + rng.normal(0, 0.3, quality.shape), 0.01, 0.99),
        oof_tokens=tokens[..., :2] * rng.uniform(0.8, 1.2, (400, A, T, 1)),
        quality=quality,
        tokens=tokens,
        top_action=TOP,
    )
    del arrays
    ladder = Ladder.of(TIERS)
    solved = data.solve(ladder, OPERATING_POINTS)
    top_quality = quality[:, TOP].mean()
    top_cost = ladder.price(tokens[:, TOP]).mean()
    assert all(s.feasible for s in solved.values())
    assert solved["parity"].quality >= top_quality
    assert solved["q95"].quality >= 0.95 * top_quality
    assert solved["third_cost"].cost_per_query_usd <= top_cost / 3
    assert solved["parity"].price_per_correct_usd >= solved["q95"].price_per_correct_usd


def test_an_unreachable_floor_falls_back_to_the_best_quality() -> None:
    """With no price meeting a floor, the point takes the best-quality price, flagged."""
    p = np.array([[0.9, 0.1], [0.9, 0.1]])
    cost = np.array([[1.0, 2.0], [1.0, 2.0]])
    quality = np.array([[0.0, 1.0], [1.0, 0.0]])
    found = solve_price(p, cost, quality, cost, kind="min_quality", limit=1.0, top_cost=2.0)
    assert not found.feasible
    assert found.quality == 0.5


def _trade_off(rng: np.random.Generator, n: int = 400) -> CalibrationData:
    """Calibration data where dearer actions are more often right; actions 0, 2 and TOP
    play the tiers unjudged (`plain_actions`)."""
    quality = (rng.random((n, A)) < np.linspace(0.3, 0.9, A)).astype(np.float64)
    tokens = np.zeros((n, A, T, 4))
    for a in range(A):
        tokens[:, a, min(a // 2, 2), :2] = 200 + 100 * a
    return CalibrationData(
        oof_p=np.clip(quality + rng.normal(0, 0.3, quality.shape), 0.01, 0.99),
        oof_tokens=tokens[..., :2] * rng.uniform(0.8, 1.2, (n, A, T, 1)),
        quality=quality,
        tokens=tokens,
        top_action=TOP,
        plain_actions=(0, 2, TOP),
    )


def test_a_point_against_the_reference_tier_meets_its_quality_and_costs_less() -> None:
    """`ref_parity` against mid is solved against always-mid: at least its quality on the
    rows, and cheaper than parity against always-top."""
    data = _trade_off(np.random.default_rng(8))
    targets = {
        "parity": OPERATING_POINTS["parity"],
        **reference_points(["cheap", "mid", "expensive"], "mid"),
    }
    solved = data.solve(Ladder.of(TIERS), targets)
    assert solved["ref_parity"].feasible
    assert solved["ref_parity"].quality >= data.quality[:, 2].mean()
    assert solved["ref_parity"].quality < data.quality[:, TOP].mean()
    assert solved["ref_parity"].cost_per_query_usd < solved["parity"].cost_per_query_usd


def test_reference_points_follow_the_configured_reference_tier() -> None:
    """`ref_parity` exists only for a reference tier below the top, and names it."""
    names = ["cheap", "mid", "expensive"]
    assert "ref_parity" not in reference_points(names, "")
    assert "ref_parity" not in reference_points(names, "expensive")
    point = reference_points(names, "cheap")["ref_parity"]
    assert (point.reference, point.reference_name) == (0, "cheap")
    assert "always-cheap's quality" in point.statement()


def test_a_reference_target_round_trips_through_the_thresholds_file() -> None:
    """A point against a reference tier reads back from its `as_dict` unchanged."""
    point = reference_points(["cheap", "mid", "expensive"], "mid")["ref_parity"]
    raw = {"ref_parity": {"target": point.as_dict()}}
    assert parse_points(raw, "t.json") == {"ref_parity": point}


def test_a_reference_target_without_a_tier_is_a_load_error() -> None:
    """`always_reference_tier` with no valid tier index is refused with the point's name."""
    raw = {
        "x": {"target": {"kind": "min_quality", "value": 1, "relative_to": "always_reference_tier"}}
    }
    with pytest.raises(ModelLoadError, match="'x' names no valid reference tier"):
        parse_points(raw, "t.json")


def test_an_action_a_row_may_not_take_is_never_chosen() -> None:
    """With `allowed`, a cheap and always-right action that rows may not take is chosen
    on none of them, at any price."""
    rng = np.random.default_rng(2)
    p = rng.random((50, 3))
    p[:, 0] = 1.0
    cost = np.ones((50, 3))
    cost[:, 0] = 0.0
    allowed = np.ones((50, 3), dtype=bool)
    allowed[::2, 0] = False
    for price in (0.0, 1.0, 100.0):
        chosen = action_choice(p, cost, price, allowed)
        assert (chosen[::2] != 0).all()
        assert (chosen[1::2] == 0).all()


def test_allowed_actions_round_trip_and_bind_the_solver(tmp_path: Path) -> None:
    """Stored `allowed` reads back, and a point solved with it never takes a masked action."""
    data = _trade_off(np.random.default_rng(3))
    allowed = np.ones(data.quality.shape, dtype=bool)
    allowed[:, 4] = False
    masked = CalibrationData(**{**data.__dict__, "allowed": allowed})
    masked.save(tmp_path / "c.npz")
    loaded = CalibrationData.load(
        tmp_path / "c.npz", n_actions=A, n_tiers=T, top_action=TOP, plain_actions=(0, 2, TOP)
    )
    assert loaded.allowed is not None
    np.testing.assert_array_equal(loaded.allowed, allowed)
    ladder = Ladder.of(TIERS)
    price = loaded.solve(ladder, {"q95": OPERATING_POINTS["q95"]})["q95"].price_per_correct_usd
    chosen = action_choice(loaded.oof_p, ladder.price(loaded.oof_tokens), price, loaded.allowed)
    assert not (chosen == 4).any()


def test_a_probe_is_one_more_payer_after_the_tiers() -> None:
    """`with_probe` prices a fourth row at the probe's prices; the tiers' rows unchanged."""
    ladder = Ladder.of(TIERS).with_probe(0.25, 1.25)
    tokens = np.zeros((4, 2))
    tokens[3] = [1_000_000, 1_000_000]
    assert ladder.price(tokens) == pytest.approx(1.5)
    tokens[0] = [1_000_000, 0]
    assert ladder.price(tokens) == pytest.approx(2.5)
