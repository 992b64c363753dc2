"""The bundle's operating points under any price ladder, cross-fitted, from its stored data.

    python model_export/operating_points.py --data ../shared/data/dev.jsonl.gz \
        [--model-dir model_export/bundle] [--prices config|recorded|FILE] [--json]

Reads `value_calibration.npz` (out-of-fold estimates and each action's realised outcome and
tokens per calibration record), prices it with the ladder (`--prices` as `tierroute eval`
reads it), and, per fold of the calibration's own folds, solves every operating point's
price on the other folds (`tierroute.model.operating.solve_price`, what a server does on a
price change) and applies it to the fold. Prints each point's held-out quality and cost
against always-top (and against the point's reference tier), with the paired bootstrap
95 % interval of the quality difference, its action mix and per-task figures (--json).
The agreement actions are chosen only where the stored `allowed` array lets them.
Unlike `tierroute eval`'s `shipped@<point>`, nothing is answered again: these are the
serial actions' table figures (no speculation), in seconds, for any ladder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from tierroute.model.bundle import THRESHOLDS_FILE, VALUE_CALIBRATION_FILE, Bundle
from tierroute.model.operating import (
    DEFAULT_SPECULATION_COST_SHARE,
    CalibrationData,
    Ladder,
    action_choice,
    limit_of,
    parse_points,
    solve_price,
)
from tierroute.model.value import (
    parse_actions,
    payers,
    plain_actions,
    top_action,
    with_probe_prices,
)
from tierroute.offline.evaluation import pipeline
from tierroute.offline.evaluation.calibration_probe import table_probe
from tierroute.offline.evaluation.crossval import training_set
from tierroute.offline.evaluation.eval_data import ladder_kind
from tierroute.offline.evaluation.summary import POINT_GOALS, paired_noise
from tierroute.offline.training.folds import make_folds
from tierroute.outcomes import default_data_path
from tierroute.settings import Settings


def _ladder(settings: Settings, data: object, prices: str, section: dict, n_payers: int) -> Ladder:
    """The tiers' prices, and the probe's (the evaluation's probe at this ladder, else the
    calibration's) when the bundle's actions call one."""
    tiers = Ladder.of(settings.tiers)
    if n_payers == len(settings.tiers):
        return tiers
    probe = table_probe(settings, data, prices)  # type: ignore[arg-type]
    if probe is not None:
        return tiers.with_probe(probe.input_usd_per_mtok, probe.output_usd_per_mtok)
    calibrated = Ladder.from_dict(section["prices"], n_payers, "cascade.value")
    return with_probe_prices(tiers, calibrated, n_payers)


def _figures(
    correct: np.ndarray, cost: np.ndarray, top_q: np.ndarray, top_c: np.ndarray
) -> dict[str, float]:
    return {
        "n": len(correct),
        "quality": round(float(correct.mean()), 6),
        "quality_diff_vs_always_expensive": round(float(correct.mean() - top_q.mean()), 6),
        "cost_ratio_vs_always_expensive": round(float(cost.mean() / top_c.mean()), 6),
    }


def main(argv: list[str] | None = None) -> int:
    """Print every operating point's cross-fitted figures under the ladder asked for."""
    parser = argparse.ArgumentParser(prog="model_export/operating_points.py")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--model-dir", type=Path, default=Path("model_export/bundle"))
    parser.add_argument("--prices", default="config")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_path = args.data or default_data_path(os.environ)
    options = pipeline.Options(model_dir=args.model_dir, prices=args.prices)
    data, _, bundle, settings = pipeline.prepare(data_path, Settings.from_env(os.environ), options)
    assert bundle is not None
    section = Bundle.read(args.model_dir).thresholds["cascade"]["value"]
    where = str(args.model_dir / THRESHOLDS_FILE)
    n_tiers = len(settings.tiers)
    actions = parse_actions(section["actions"], n_tiers, where)
    n_payers = payers(section, n_tiers, where)
    evidence = CalibrationData.load(
        args.model_dir / VALUE_CALIBRATION_FILE,
        n_actions=len(actions),
        n_tiers=n_payers,
        top_action=top_action(actions, n_tiers),
        plain_actions=plain_actions(actions, n_tiers),
    )
    targets = parse_points(section["operating_points"], where)
    share = float(section.get("speculation_cost_share", DEFAULT_SPECULATION_COST_SHARE))
    folds = make_folds(training_set(data.path, None, bundle.prefix_chars), pipeline.DEFAULT_FOLDS)
    ladder = _ladder(settings, data, args.prices, section, n_payers)
    cost_pred = ladder.price(evidence.oof_tokens)
    cost_real = ladder.price(evidence.tokens)
    allowed = evidence.allowed
    top = evidence.top_action
    rows = np.arange(len(folds))
    tasks = np.array([r.task for r in data.records])
    kind = ladder_kind(args.prices)
    out = []
    for name, target in targets.items():
        base = evidence.baseline(target)
        chosen = np.zeros(len(folds), dtype=np.int64)
        for fold in range(int(folds.max()) + 1):
            train, test = folds != fold, folds == fold
            price = solve_price(
                evidence.oof_p[train],
                cost_pred[train],
                evidence.quality[train],
                cost_real[train],
                kind=target.kind,
                limit=limit_of(
                    target,
                    float(evidence.quality[train, base].mean()),
                    float(cost_real[train, base].mean()),
                    share,
                ),
                top_cost=float(cost_real[train, top].mean()),
                allowed=None if allowed is None else allowed[train],
            ).price_per_correct_usd
            chosen[test] = action_choice(
                evidence.oof_p[test],
                cost_pred[test],
                price,
                None if allowed is None else allowed[test],
            )
        correct = evidence.quality[rows, chosen]
        cost = cost_real[rows, chosen]
        reference = evidence.quality[:, top]
        ratio = float(cost.mean() / cost_real[:, top].mean())
        noise = paired_noise(correct, reference)
        bounds = POINT_GOALS.get(kind, {}).get(name)
        mix = np.bincount(chosen, minlength=len(actions)) / len(chosen)
        out.append(
            {
                "point": name,
                "ladder": kind,
                "quality": round(float(correct.mean()), 6),
                "quality_ratio_vs_always_expensive": round(
                    float(correct.mean() / reference.mean()), 6
                ),
                "quality_diff_vs_always_expensive": round(
                    float(correct.mean() - reference.mean()), 6
                ),
                "quality_diff_ci95": noise["quality_diff_ci95"],
                "cost_ratio_vs_always_expensive": round(ratio, 6),
                "times_cheaper": round(1 / ratio, 3),
                "vs_baseline": {
                    "action": actions[base].name([t.name for t in settings.tiers]),
                    "quality_diff": round(
                        float(correct.mean() - evidence.quality[:, base].mean()), 6
                    ),
                    "cost_ratio": round(float(cost.mean() / cost_real[:, base].mean()), 6),
                },
                "action_mix": {
                    a.name([t.name for t in settings.tiers]): round(float(m), 4)
                    for a, m in zip(actions, mix, strict=True)
                },
                "per_task": {
                    task: _figures(
                        correct[tasks == task],
                        cost[tasks == task],
                        reference[tasks == task],
                        cost_real[tasks == task, top],
                    )
                    for task in sorted(set(tasks.tolist()))
                },
                "goal": None
                if bounds is None
                else {
                    "min_quality_ratio": bounds[0],
                    "max_cost_ratio": bounds[1],
                    "met": bool(
                        correct.mean() >= bounds[0] * reference.mean() - 1e-12
                        and ratio <= bounds[1] + 1e-12
                    ),
                },
            }
        )
    if args.json:
        print(json.dumps(out))
    else:
        for row in out:
            low, high = row["quality_diff_ci95"]
            goal = row["goal"]
            verdict = "" if goal is None else f"; goal {'met' if goal['met'] else 'not met'}"
            base = row["vs_baseline"]
            print(
                f"{row['point']:<10} ({row['ladder']}): quality "
                f"{row['quality_ratio_vs_always_expensive']:.4f} x always-top "
                f"({row['quality_diff_vs_always_expensive']:+.4f}, 95 % [{low:+.4f}, "
                f"{high:+.4f}]) at {row['cost_ratio_vs_always_expensive']:.3f}x its cost "
                f"({row['times_cheaper']:.2f}x cheaper){verdict}; against {base['action']}: "
                f"{base['quality_diff']:+.4f} at {base['cost_ratio']:.3f}x its cost"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
