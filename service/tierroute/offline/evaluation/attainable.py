"""Operating points and calibration targets a file cannot reach: a result, not an exit.

A bundle's target (say, quality at least always-top's) is solved on the data it was
calibrated on; on another file no price of a correct answer, or no configuration, may meet
it. The cross-fitted evaluation then reports the target as unattainable on that file and
goes on with the default cost budget's configuration for the knobs the target would have
set; each named operating point whose target no price meets on the file is reported too
(its strategy runs at the nearest price, as a server would serve it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError
from tierroute.model.operating import PointTarget
from tierroute.offline.evaluation import calibration as cal

logger = logging.getLogger(__name__)


def cross_fit_or_fallback(
    inputs: cal.Inputs,
    folds: npt.NDArray[np.int64],
    target: cal.CalibrationTarget,
    fallback: cal.CalibrationTarget,
    share: float,
) -> tuple[cal.CrossFit, list[dict[str, Any]]]:
    """`cal.cross_fit` toward `target`, else toward `fallback` with the failure reported;
    ConfigError (naming both) only when neither can be met."""
    try:
        return cal.cross_fit(inputs, folds, target, speculation_cost_share=share), []
    except ConfigError as exc:
        logger.warning("unattainable on this file: %s", exc)
        entry = {
            "what": "the shipped calibration target",
            "target": target.statement(),
            "reason": str(exc),
            "instead": f"cross-fitted toward {fallback.statement()}",
        }
    try:
        fit = cal.cross_fit(inputs, folds, fallback, speculation_cost_share=share)
    except ConfigError as exc:
        raise ConfigError(f"{entry['reason']}; nor can the fallback be met: {exc}") from exc
    return fit, [entry]


def unattainable_points(
    inputs: cal.Inputs, points: Mapping[str, PointTarget], share: float
) -> list[dict[str, Any]]:
    """The named operating points no price of a correct answer meets on the whole file."""
    everything = np.ones(len(inputs.tables.quality), dtype=bool)
    out = []
    for name, point in points.items():
        solved = cal.solve_point(inputs, everything, point, share)
        if solved.feasible:
            continue
        out.append(
            {
                "what": f"operating point {name}",
                "target": point.statement(),
                "reason": (
                    f"no price of a correct answer meets it on {int(everything.sum())} rows "
                    f"(nearest: quality {solved.quality:.4f} at "
                    f"${solved.cost_per_query_usd:.6f} per query)"
                ),
                "instead": "served at the nearest price per fold",
            }
        )
    return out
