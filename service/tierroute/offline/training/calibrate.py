"""Calibrate the risk thresholds of `routing.policy.calibrated_rule` toward a stated target.

The target is relative to always using the top tier, on the recorded outcomes: either a cost
ceiling (maximise quality while the average cost per query stays within a share of
always-top's) or a quality floor (minimise cost while quality stays at or above a share of
always-top's). Thresholds come from a grid search on out-of-fold probabilities; the honest
figures come from cross-fitting (calibrate on the other folds, evaluate on the held-out one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError
from tierroute.offline.training.labels import NO_TIER, TrainingSet
from tierroute.routing import RiskThresholds, calibrated_rule, published_rule

TargetKind = Literal["max_cost_ratio", "min_quality_ratio"]
# Thresholds are searched on a fixed grid so calibration is reproducible and reviewable.
THRESHOLD_STEP = 0.0025
THRESHOLD_GRID = np.round(np.arange(0, round(1 / THRESHOLD_STEP) + 1) * THRESHOLD_STEP, 4)
DEFAULT_MAX_COST_RATIO = 1 / 3
_DIGITS = 6


@dataclass(frozen=True)
class Target:
    """What calibration aims for, relative to always using the top tier."""

    kind: TargetKind
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("max_cost_ratio", "min_quality_ratio"):
            raise ConfigError(f"unknown calibration target {self.kind!r}")
        if not 0.0 < self.value <= 1.0:
            raise ConfigError(f"target {self.kind} must be in (0, 1], not {self.value}")

    def statement(self) -> str:
        """The target in one sentence, as the thresholds file states it."""
        if self.kind == "max_cost_ratio":
            return (
                f"maximise recorded quality subject to average cost per query <= "
                f"{self.value:.4g} x always-top-tier's cost"
            )
        return (
            f"minimise average cost per query subject to recorded quality >= "
            f"{self.value:.4g} x always-top-tier's quality"
        )

    def as_dict(self) -> dict[str, Any]:
        """The target as written to thresholds.json."""
        return {
            "kind": self.kind,
            "value": round(self.value, _DIGITS),
            "relative_to": "always_top_tier",
            "statement": self.statement(),
        }


@dataclass(frozen=True)
class Calibration:
    """Thresholds found by the search and what they achieve on the calibration rows."""

    risk: tuple[float, ...]
    quality: float
    cost_usd: float


def risk_columns(proba: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """risk[:, t] = P(a tier above t was needed), summed as `routing.policy.risks` does."""
    out = np.zeros_like(proba)
    above = np.zeros(len(proba), dtype=proba.dtype)
    for t in range(proba.shape[1] - 1, -1, -1):
        out[:, t] = above
        above = above + proba[:, t]
    return out


def calibrated_choices(
    proba: npt.NDArray[np.float64], risk: Sequence[float]
) -> npt.NDArray[np.int64]:
    """Vectorised `calibrated_rule` without a quality floor: the tier chosen for every row."""
    risks = risk_columns(proba)
    top = proba.shape[1] - 1
    choice = np.full(len(proba), top, dtype=np.int64)
    undecided = np.ones(len(proba), dtype=bool)
    for t in range(top):
        take = undecided & (risks[:, t] <= risk[t])
        choice[take] = t
        undecided &= ~take
    return choice


def rule_choices(proba: npt.NDArray[np.float64], rule: str, risk: Sequence[float] = ()) -> Any:
    """The tier chosen per row by the serving code's own rule functions, row by row."""
    names = [str(i) for i in range(proba.shape[1])]
    rows = proba.tolist()
    if rule == "published":
        return np.array([published_rule(p, names)[0] for p in rows], dtype=np.int64)
    thresholds = RiskThresholds(tuple(risk))
    return np.array([calibrated_rule(p, thresholds, names)[0] for p in rows], dtype=np.int64)


def oracle_choices(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The cheapest correct tier; the cheap tier when none was correct."""
    return np.where(labels == NO_TIER, 0, labels)


@dataclass(frozen=True)
class ThresholdGrid:
    """Total quality and cost of the rule at every pair of grid thresholds, on some rows."""

    quality: npt.NDArray[np.float64]
    spend: npt.NDArray[np.float64]
    top_quality: float
    top_cost: float
    n: int

    def select(self, target: Target) -> Calibration:
        """The grid point that best meets `target`; ConfigError when none meets it.

        Ties go to the lowest thresholds (the most cautious rule) so the answer is unique.
        """
        quality, spend = self.quality, self.spend
        # Quality sums are counts of correct answers, so they compare exactly; costs get a
        # hair of slack for float summation order.
        if target.kind == "max_cost_ratio":
            feasible = spend <= target.value * self.top_cost * (1 + 1e-12)
            primary, secondary = -quality, spend
        else:
            feasible = quality >= np.ceil(target.value * self.top_quality - 1e-9)
            primary, secondary = spend, -quality
        if not feasible.any():
            raise ConfigError(
                f"no thresholds meet the target ({target.statement()}): reachable cost ratio "
                f"{spend.min() / self.top_cost:.3f}..{spend.max() / self.top_cost:.3f}, "
                f"quality ratio {quality.min() / self.top_quality:.3f}.."
                f"{quality.max() / self.top_quality:.3f}"
            )
        flat = np.flatnonzero(feasible.ravel())
        # np.lexsort sorts by the last key first; the flat index breaks remaining ties.
        best = flat[np.lexsort((flat, secondary.ravel()[flat], primary.ravel()[flat]))[0]]
        i, j = divmod(int(best), len(THRESHOLD_GRID))
        return Calibration(
            risk=(float(THRESHOLD_GRID[i]), float(THRESHOLD_GRID[j])),
            quality=float(quality[i, j] / self.n),
            cost_usd=float(spend[i, j] / self.n),
        )


def threshold_grid(
    proba: npt.NDArray[np.float64],
    correct: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
) -> ThresholdGrid:
    """Evaluate the three-tier calibrated rule at every pair of grid thresholds.

    For a fixed cheap-tier threshold the rows not sent cheap go mid when their mid-tier risk
    is within the second threshold; with the rows sorted by that risk, every second threshold
    is one cumulative-sum lookup, so the whole grid costs one pass per grid row.
    """
    if proba.shape[1] != 3:
        raise ConfigError("threshold search is implemented for exactly three tiers")
    risks = risk_columns(proba)
    order = np.argsort(risks[:, 1], kind="stable")
    positions = np.searchsorted(risks[order, 1], THRESHOLD_GRID, side="right")
    n_grid = len(THRESHOLD_GRID)
    quality = np.zeros((n_grid, n_grid))
    spend = np.zeros((n_grid, n_grid))
    for i, a in enumerate(THRESHOLD_GRID):
        cheap = risks[:, 0] <= a
        rest = ~cheap[order]
        q_mid = np.concatenate(([0.0], np.cumsum(rest * correct[order, 1])))
        q_top = np.concatenate(([0.0], np.cumsum(rest * correct[order, 2])))
        c_mid = np.concatenate(([0.0], np.cumsum(rest * cost[order, 1])))
        c_top = np.concatenate(([0.0], np.cumsum(rest * cost[order, 2])))
        quality[i] = correct[cheap, 0].sum() + q_mid[positions] + (q_top[-1] - q_top[positions])
        spend[i] = cost[cheap, 0].sum() + c_mid[positions] + (c_top[-1] - c_top[positions])
    return ThresholdGrid(
        quality, spend, float(correct[:, 2].sum()), float(cost[:, 2].sum()), len(proba)
    )


def search_thresholds(
    proba: npt.NDArray[np.float64],
    correct: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    target: Target,
) -> Calibration:
    """Grid-search the two risk thresholds of a three-tier rule toward `target`."""
    return threshold_grid(proba, correct, cost).select(target)


def cross_fitted(
    proba: npt.NDArray[np.float64],
    folds: npt.NDArray[np.int64],
    data: TrainingSet,
    targets: Sequence[Target],
) -> list[tuple[npt.NDArray[np.int64], list[list[float]]] | None]:
    """Per target: calibrate on every fold's complement and route the fold with the result.

    For each target, the held-out choice of every row and the thresholds found per fold, or
    None when some fold's complement cannot meet the target. The probabilities are
    out-of-fold already; this adds held-out thresholds on top.
    """
    results: list[tuple[npt.NDArray[np.int64], list[list[float]]] | None] = [
        (np.zeros(len(proba), dtype=np.int64), []) for _ in targets
    ]
    for fold in range(int(folds.max()) + 1):
        held_out = folds == fold
        grid = threshold_grid(proba[~held_out], data.correct[~held_out], data.cost[~held_out])
        for k, target in enumerate(targets):
            result = results[k]
            if result is None:
                continue
            try:
                found = grid.select(target)
            except ConfigError:
                results[k] = None
                continue
            result[0][held_out] = calibrated_choices(proba[held_out], found.risk)
            result[1].append(list(found.risk))
    return results


def target_sweep(
    proba: npt.NDArray[np.float64],
    folds: npt.NDArray[np.int64],
    data: TrainingSet,
    targets: Sequence[Target],
) -> list[dict[str, Any]]:
    """Cross-fitted figures of the calibrated rule for several targets: the trade-off curve."""
    rows: list[dict[str, Any]] = []
    for target, result in zip(targets, cross_fitted(proba, folds, data, targets), strict=True):
        row: dict[str, Any] = {"kind": target.kind, "value": round(target.value, _DIGITS)}
        if result is None:
            row["feasible"] = False
        else:
            row.update(feasible=True, **_metrics(result[0], data.correct, data.cost))
        rows.append(row)
    return rows


SWEEP_TARGETS = (
    *(Target("max_cost_ratio", v) for v in (0.1, 0.2, 1 / 3, 0.5)),
    *(Target("min_quality_ratio", v) for v in (0.95, 0.98, 0.99, 1.0)),
)


def _metrics(
    choice: npt.NDArray[np.int64], correct: npt.NDArray[np.float64], cost: npt.NDArray[np.float64]
) -> dict[str, Any]:
    rows = np.arange(len(choice))
    quality = float(correct[rows, choice].mean())
    spend = float(cost[rows, choice].mean())
    top_quality, top_cost = float(correct[:, -1].mean()), float(cost[:, -1].mean())
    mix = np.bincount(choice, minlength=correct.shape[1]) / len(choice)
    return {
        "n": len(choice),
        "quality": round(quality, _DIGITS),
        "cost_usd": round(spend, 9),
        "quality_vs_top": round(quality / top_quality, _DIGITS) if top_quality else None,
        "cost_vs_top": round(spend / top_cost, _DIGITS) if top_cost else None,
        "mix": [round(float(v), _DIGITS) for v in mix],
    }


def strategy_report(
    choices: Mapping[str, npt.NDArray[np.int64]], data: TrainingSet
) -> dict[str, Any]:
    """Quality, cost and tier mix of every strategy, overall and per task."""
    report: dict[str, Any] = {
        "tiers": list(data.tier_names),
        "overall": {name: _metrics(c, data.correct, data.cost) for name, c in choices.items()},
        "per_task": {},
    }
    for task in sorted(set(data.tasks.tolist())):
        mask = data.tasks == task
        report["per_task"][task] = {
            name: _metrics(c[mask], data.correct[mask], data.cost[mask])
            for name, c in choices.items()
        }
    return report


def baseline_choices(data: TrainingSet) -> dict[str, npt.NDArray[np.int64]]:
    """Always-one-tier strategies and the oracle."""
    n = len(data)
    out = {
        f"always_{name}": np.full(n, t, dtype=np.int64) for t, name in enumerate(data.tier_names)
    }
    out["oracle"] = oracle_choices(data.labels)
    return out
