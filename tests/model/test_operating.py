"""Prices and operating points served with numpy only: the ladder, the stored calibration
data a bundle re-solves its operating points from, and its load errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierroute.errors import ModelLoadError
from tierroute.model.operating import OPERATING_POINTS, CalibrationData, Ladder, solve_price
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
