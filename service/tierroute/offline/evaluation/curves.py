"""Each policy's trade-off over its knob, from the calibration tables: the curves the
frontier plot draws (`report["curves"]`).

- the value policy over its price of a correct answer (out-of-fold estimates, the actions'
  serial columns, the operating points' grid);
- one-call classifier routing over one risk threshold shared by every tier below the top.

Table lookups, so the curves cost no extra engine runs; they equal what the engine does at
each knob (the tables' columns are what it does, tested in tests/offline).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError
from tierroute.model.operating import price_sweep
from tierroute.offline.evaluation.calibration import (
    _PLAIN,
    DIGITS,
    RISK_COARSE,
    TOP_COLUMN,
    Inputs,
    action_tables,
)


def price_curve(inputs: Inputs) -> list[dict[str, float]]:
    """The value policy over its knob, the price of a correct answer (out-of-fold
    estimates, serial columns): quality and cost relative to always-top per grid price."""
    if inputs.value_p is None or inputs.value_cost is None:
        raise ConfigError("the value policy's curve needs value-model estimates")
    everything = np.ones(len(inputs.value_p), dtype=bool)
    quality, cost = action_tables(inputs, everything)
    top_q = float(inputs.tables.quality[:, TOP_COLUMN].mean())
    top_c = float(inputs.tables.cost[:, TOP_COLUMN].mean())
    prices, q, c = price_sweep(inputs.value_p, inputs.value_cost, quality, cost, top_c)
    n = len(quality)
    return _curve(prices, q / n, c / n, top_q=top_q, top_c=top_c, knob="price_per_correct_usd")


def risk_curve(inputs: Inputs) -> list[dict[str, float]]:
    """One-call classifier routing over its knob: one risk threshold for every tier below
    the top (the cheapest tier whose out-of-fold risk is within it), on the plain columns."""
    t = inputs.tables
    top_q, top_c = float(t.quality[:, TOP_COLUMN].mean()), float(t.cost[:, TOP_COLUMN].mean())
    arange = np.arange(len(t.quality))
    knobs = [float(v) for v in RISK_COARSE]
    q, c = np.empty(len(knobs)), np.empty(len(knobs))
    for i, a in enumerate(knobs):
        r = inputs.risks
        start = np.where(r[:, 0] <= a, 0, np.where(r[:, 1] <= a, 1, 2))
        cols = _PLAIN[start]
        q[i], c[i] = t.quality[arange, cols].mean(), t.cost[arange, cols].mean()
    return _curve(knobs, q, c, top_q=top_q, top_c=top_c, knob="max_risk")


def _curve(
    knobs: Sequence[float],
    q: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    *,
    top_q: float,
    top_c: float,
    knob: str,
) -> list[dict[str, float]]:
    return [
        {
            knob: k,
            "quality": round(float(qi), DIGITS),
            "quality_vs_always_expensive": round(float(qi) - top_q, DIGITS),
            "cost_ratio_vs_always_expensive": round(float(ci) / top_c, DIGITS) if top_c else 0.0,
        }
        for k, qi, ci in zip(knobs, q, c, strict=True)
    ]


__all__ = ["price_curve", "risk_curve"]
