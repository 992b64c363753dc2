"""The output of calibration: the thresholds document a bundle ships (risk limits, the Cascade's
settings and the value policy's price, with the figures that back them), the per-setting table
and the per-slice report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.offline.evaluation.calibration import (
    BOUND_GRID,
    COLUMNS,
    DIGITS,
    MIN_TYPE_ROWS,
    RATE_GRID,
    TOP_COLUMN,
    CalibrationTarget,
    CrossFit,
    Inputs,
    Params,
    column_name,
    figures,
)
from tierroute.offline.evaluation.crossval import GROUPING, CrossValidation
from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.evaluation.scoring import GroundTruth
from tierroute.offline.evaluation.summary import misroutes

FORMAT = 1


def settings_table(
    inputs: Inputs, data: EvalData, tier_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Every fixed setting's quality and cost (as a multiple of always-top's), overall and
    per task: what each choice a configuration makes would do to every record.
    """
    t = inputs.tables
    tasks = np.array([r.task for r in data.records])

    def entry(rows: npt.NDArray[np.bool_], column: int) -> dict[str, float]:
        top = float(t.cost[rows, TOP_COLUMN].mean())
        return {
            "quality": round(float(t.quality[rows, column].mean()), DIGITS),
            "cost_ratio_vs_always_expensive": round(
                float(t.cost[rows, column].mean()) / top, DIGITS
            ),
            "judge_cost_ratio_vs_always_expensive": round(
                float(t.judge_cost[rows, column].mean()) / top, DIGITS
            ),
        }

    everything = np.ones(len(tasks), dtype=bool)
    return {
        column_name(column, tier_names): {
            **entry(everything, column),
            "per_task": {task: entry(tasks == task, column) for task in sorted(set(tasks))},
        }
        # The agreement columns exist only when calibration had a probe (calibration_probe).
        for column in range(t.quality.shape[1])
    }


def slice_report(
    data: EvalData,
    inputs: Inputs,
    cols: npt.NDArray[np.int64],
    truth: GroundTruth,
    tier_names: Sequence[str],
) -> dict[str, Any]:
    """Per task and per query type: quality, cost, mix and misroute rates up and down."""
    everything = np.ones(len(cols), dtype=bool)
    t = inputs.tables
    arange = np.arange(len(cols))
    final = t.final[arange, cols]
    labels = np.array([truth.min_tier[r.replay_id] for r in data.records], dtype=np.int64)
    slices: dict[str, Any] = {}
    for field, values in (
        ("task", [r.task for r in data.records]),
        ("query_type", [r.query_type for r in data.records]),
    ):
        array = np.array(values)
        out = {}
        for value in sorted(set(values)):
            mask = array == value
            entry = figures(inputs, cols[mask], mask, tier_names)
            up, down = misroutes(final[mask], labels[mask])
            entry["misroute_up"] = round(up, DIGITS)
            entry["misroute_down"] = round(down, DIGITS)
            out[value] = entry
        slices[field] = out
    overall = figures(inputs, cols, everything, tier_names)
    up, down = misroutes(final, labels)
    overall.update(misroute_up=round(up, DIGITS), misroute_down=round(down, DIGITS))
    return {
        "definitions": {
            "misroute_up": "share of records answered on a tier above the cheapest tier whose "
            "recorded answer was correct (money spent for nothing)",
            "misroute_down": "share of records answered on a tier below the cheapest correct "
            "tier (a wrong answer a higher tier would have got right)",
            "figures": "held-out: each fold routed with the configuration searched on the "
            "other folds",
        },
        "overall": overall,
        **slices,
    }


def thresholds_document(
    *,
    version: str,
    tier_names: Sequence[str],
    params: Params,
    target: CalibrationTarget,
    in_sample: Mapping[str, Any],
    held_out: Mapping[str, Any],
    fit: CrossFit,
    cv: CrossValidation,
    data: EvalData,
    speculation_cost_share: float,
    sweep: Sequence[Mapping[str, Any]] = (),
    classifier_cv: Any = None,
    static: Mapping[str, Any] | None = None,
    value_section: Mapping[str, Any] | None = None,
    pricing: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The reviewable thresholds file: values, what each means, and the CV figures.

    Two sets of risk limits ship: the top-level `risk` (with its `target`) is the static
    router's, calibrated by training for callers of Route who call the chosen tier
    themselves, with no judge behind it; `cascade.risk` (with `cascade.target`) is where
    Cascade starts, searched here together with the judge rates, knowing that a judge and
    escalation follow. `static` is the training document whose `risk` and `target` are kept.
    """
    static = static or {}
    static_risk = list(static.get("risk", params.risk))
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "rule": "calibrated",
        "tiers": list(tier_names),
        "risk": static_risk,
        "target": dict(static.get("target", {})),
        "cascade": {
            "risk": list(params.risk),
            **params.cascade_section(),
            "target": target.as_dict(),
        },
        "explain": {
            "risk": "the Route RPC's calibrated rule (set by training, kept here): answer on "
            "the cheapest tier t whose risk P(a tier above t was needed) is <= risk[t]; else "
            f"the top tier. {tier_names[0]} needs risk <= {static_risk[0]}, "
            f"{tier_names[1]} <= {static_risk[1]}",
            "cascade.risk": "the same rule for the tier Cascade starts on, searched with the "
            "judge rates: a judge and escalation follow, so it can start lower. "
            f"{tier_names[0]} needs risk <= {params.risk[0]}, {tier_names[1]} <= {params.risk[1]}",
            "cascade.judge_sample_rates": "share of requests per query type whose non-top "
            "answers are judged by the tier above (the rest are returned unchecked, "
            "'sampled_out')",
            "cascade.judge_sample_rate": "rate for query types with no rate of their own, "
            f"because calibration saw fewer than {MIN_TYPE_ROWS} of them (the traffic-weighted "
            "mean of the calibrated rates)",
            "cascade.speculative_bound": "start the next tier in parallel when the classifier's "
            "confidence (its largest probability) is below this and the answer will be judged; "
            "0 never speculates",
            "calibration.held_out": "the honest figures: per fold, every value above searched "
            "on the other folds, the fold answered with them",
            "calibration.in_sample": "the values above on all rows they were searched on "
            "(optimistic)",
            "calibration.settings": "every fixed setting (start tier:judging:speculation) on "
            "every record, overall and per task: quality and cost as a multiple of always-top's",
        },
        "calibration": {
            "folds": cv.k,
            "grouping": GROUPING,
            "probabilities": "out of fold: each record scored by the fold model that did not "
            "see it",
            "held_out": dict(held_out),
            "in_sample": dict(in_sample),
            "per_fold": [p.as_dict() for p in fit.params],
            "target_sweep": [dict(row) for row in sweep],
            "settings": dict(settings or {}),
            "search": {
                "risk_grid": "0..1 step 0.02, then step 0.0025 within 0.02 of the best",
                "judge_rate_grid": [float(v) for v in RATE_GRID],
                "speculative_bound_grid": [float(v) for v in BOUND_GRID],
                "speculation_cost_share": speculation_cost_share,
                "tables": "every record answered by the cascade engine over the in-process "
                f"replay backend under the {len(COLUMNS)} fixed settings (start tier x judge "
                "mode x speculative, and the two agreement checks with the probe when one is "
                "configured and the data holds its answers); a configuration selects one per "
                "record",
            },
        },
        "data": {"file": data.path.name, "sha256": data.sha256, "records": len(data.records)},
        "pricing": pricing if pricing is not None else data.pricing.as_dict(),
    }
    if value_section is not None:
        document["cascade"]["policy"] = "value"
        document["cascade"]["value"] = dict(value_section)
        document["explain"].update(
            {
                "cascade.policy": "'value': a Cascade starts, and judges, by the value policy; "
                "'thresholds' (or absent): it starts on cascade.risk and judges by the sampling "
                "rates. Requests with a quality floor use cascade.risk either way",
                "cascade.value.price_per_correct_usd": "the default operating point's price of "
                "a correct answer: per request the action with the lowest expected cost - "
                "price x P(correct) is taken, over the actions listed (start tier; judge none, "
                "all answers below the top, or only the first)",
                "cascade.value.operating_points": "named targets relative to always-top "
                "(parity: cheapest with quality >= always-top's; q95: >= 95 % of it; "
                "third_cost: best quality at <= 1/3 of its cost), each with its price under "
                "cascade.value.prices and its held-out (cross-fitted) figures; a request picks "
                "one with policy.operating_point, default_operating_point serves the rest",
                "cascade.value.prices": "the tier prices calibration priced tokens with; a "
                "server configured with other prices solves the operating points again from "
                "cascade.value.calibration_data, without refitting",
                "cascade.value.model": "value.onnx beside this file: per action, the logit of "
                "P(correct), then the expected input and output tokens per tier (priced at "
                "load time with the configured tiers' prices)",
            }
        )
        document["calibration"]["search"]["price_grid"] = (
            "always-top's cost per query x 0.01..100, 601 geometric steps"
        )
    if classifier_cv is not None:
        document["classifier_cv"] = classifier_cv
    if "familiarity" in static:
        # The familiarity threshold belongs to the classifier's features: training set it.
        document["familiarity"] = dict(static["familiarity"])
    return document
