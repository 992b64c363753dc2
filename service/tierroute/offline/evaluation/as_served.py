"""`tierroute eval --as-served`: the bundle a server loads, scored as it serves.

Cross-fitted evaluation (`pipeline.evaluate`) refits the text models and re-solves the
operating points per fold on the file it evaluates, so it scores the training recipe on that
file's mix. This scores the bundle itself: every record is answered by the server's own
Router and CascadeEngine (the harness: replay backend in-process, virtual time) with the
bundle loaded by `model.load_model`, exactly as `tierroute serve` loads it (its ONNX models,
its thresholds.json operating points and cascade section, priced for the evaluated ladder),
once per operating point it ships. Nothing is refitted or re-solved here; only when the
ladder's prices differ from the calibration's does loading re-solve the points from the
bundle's stored calibration data, as a server configured with those prices would.

The report compares each point with the always-one-tier baselines on the same ladder,
overall and per task slice, against the top tier, the middle tier and the configured
reference tier (`routing.reference_tier`; empty = the top tier).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import ConfigError
from tierroute.model import load_model
from tierroute.model.bundle import THRESHOLDS_FILE
from tierroute.offline.evaluation.eval_data import (
    LADDER_CONFIG,
    EvalData,
    ladder_kind,
    pricing_report,
)
from tierroute.offline.evaluation.harness import (
    Outcome,
    RunPlan,
    Strategy,
    describe,
    run_strategies,
)
from tierroute.offline.evaluation.pipeline import Options, Progress, in_view, prepare
from tierroute.offline.evaluation.scoring import GroundTruth
from tierroute.offline.evaluation.strategies import always_name, baseline_strategies
from tierroute.offline.evaluation.summary import (
    REPORT_FILE,
    SUMMARY_FILE,
    correctness,
    paired_noise,
    strategy_metrics,
    write_json,
)
from tierroute.offline.evaluation.usable import check_lines
from tierroute.settings import Settings

SERVED = "served"
FIGURES = "as served"
TOP, MID = "always_expensive", "always_mid"
_Q = 6

# The goals per price ladder, by operating point ("default": the bundle's default point):
# (quality at least always-top's minus this many points, or None; quality at least this
# share of always-top's, or None; cost at most this share of always-top's).
GoalBounds = tuple[float | None, float | None, float]
GOALS: Mapping[str, Mapping[str, GoalBounds]] = {
    LADDER_CONFIG: {"default": (0.005, None, 1 / 2), "q95": (None, 0.95, 1 / 4)},
    "recorded": {"default": (0.0, None, 1 / 4), "q95": (None, 0.95, 1 / 10)},
}


@dataclass(frozen=True)
class ServedBundle:
    """What a server loading `path` serves: its version and operating points."""

    path: Path
    version: str
    # Operating point name -> price of a correct answer under the evaluated ladder.
    points: Mapping[str, float]
    default_point: str | None

    def strategy_name(self, point: str | None) -> str:
        """The report's name for the bundle served at `point` (None: no value policy)."""
        return f"{SERVED}@{point}" if point else SERVED

    @property
    def default_name(self) -> str:
        """The report's name of what a request without a point gets."""
        return self.strategy_name(self.default_point)

    def as_dict(self) -> dict[str, Any]:
        """For the report."""
        return {
            "version": self.version,
            "path": str(self.path),
            "default_operating_point": self.default_point,
            "price_per_correct_usd": {k: round(v, 6) for k, v in self.points.items()},
            "loaded_by": "tierroute.model.load_model, as `tierroute serve` loads a bundle",
        }


def served_bundle(model_dir: Path, settings: Settings) -> ServedBundle:
    """Load the bundle in `model_dir` as a server with `settings`' tiers would, or fail
    with the loader's error naming the file at fault."""
    if not (model_dir / THRESHOLDS_FILE).is_file():
        raise ConfigError(
            f"--as-served needs a model bundle: no {THRESHOLDS_FILE} in {model_dir} "
            "(run `make model` or pass --model-dir)"
        )
    scorer = load_model(model_dir, len(settings.tiers), settings.tiers).scorer
    value = getattr(scorer, "value_model", None)
    points = dict(value.points) if value is not None else {}
    default = value.default_point if value is not None else None
    return ServedBundle(model_dir, scorer.version, points, default)


def served_strategies(settings: Settings, bundle: ServedBundle) -> list[Strategy]:
    """The bundle at each operating point it ships (one strategy without a value policy),
    routed the way the server routes a Cascade without options."""
    points: Sequence[str | None] = list(bundle.points) or [None]
    out = []
    for point in points:
        at = f" at operating point {point}" if point else ""
        default = " (the default)" if point == bundle.default_point and point else ""
        out.append(
            Strategy(
                bundle.strategy_name(point),
                f"as served: bundle {bundle.version} loaded as `tierroute serve` loads it, "
                f"{settings.routing.default_strategy} routing "
                f"({settings.routing.default_rule} rule){at}{default}; no refit, no re-solving",
                (
                    RunPlan(
                        settings,
                        route_strategy=settings.routing.default_strategy,
                        rule=settings.routing.default_rule,
                        bundle_dir=bundle.path,
                        operating_point=point or "",
                    ),
                ),
            )
        )
    return out


def evaluate_as_served(
    data_path: Path,
    out_dir: Path,
    settings: Settings,
    options: Options,
    *,
    progress: Callable[[int], Progress] | None = None,
    trio: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Answer every record through the bundle as served and through each always-one-tier
    baseline; write report.json and summary.md to `out_dir` and return the report."""
    return in_view(
        data_path,
        options,
        trio,
        lambda path, opts, extra: _evaluate(
            path, out_dir, settings, opts, progress=progress, extra=extra
        ),
    )


def _evaluate(
    data_path: Path,
    out_dir: Path,
    settings: Settings,
    options: Options,
    *,
    progress: Callable[[int], Progress] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    data, truth, _, settings = prepare(data_path, settings, options)
    bundle = served_bundle(options.model_dir or settings.routing.model_dir, settings)
    strategies = [*baseline_strategies(settings), *served_strategies(settings, bundle)]
    tick = progress(len(data) * len(strategies)) if progress is not None else None
    outcomes = run_strategies(
        data, strategies, workers=options.workers, seed=options.seed, progress=tick
    )
    report = served_report(
        data,
        outcomes,
        truth,
        settings=settings,
        bundle=bundle,
        descriptions=describe(strategies),
        ladder=ladder_kind(options.prices),
    )
    report["pricing"] = pricing_report(settings.tiers, options.prices, data)
    report["seed"] = options.seed
    report.update(extra or {})
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / REPORT_FILE, report)
    (out_dir / SUMMARY_FILE).write_text(served_markdown(report), encoding="utf-8")
    return report


def reference_tier(settings: Settings) -> str:
    """The tier a team uses today (`routing.reference_tier`; empty: the top tier)."""
    return settings.routing.reference_tier or settings.tiers[-1].name


def versus(entry: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """Quality difference (points of accuracy as a fraction) and cost against `base`."""
    cost, base_cost = entry["cost_per_query_usd"], base["cost_per_query_usd"]
    return {
        "quality_diff": round(entry["quality"] - base["quality"], _Q),
        "quality_ratio": round(entry["quality"] / base["quality"], _Q) if base["quality"] else None,
        "cost_ratio": round(cost / base_cost, _Q) if base_cost else None,
        "times_cheaper": round(base_cost / cost, 3) if cost else None,
    }


def _slices(
    outcomes: Sequence[Outcome], data: EvalData, correct: Any, names: Sequence[str]
) -> dict[str, Any]:
    tasks = np.array([r.task for r in data.records])
    start = np.array([o.start_tier for o in outcomes], dtype=np.int64)
    final = np.array([o.final_tier for o in outcomes], dtype=np.int64)
    cost = np.array([o.cost_usd for o in outcomes])
    out = {}
    for task in data.tasks():
        rows = tasks == task
        out[task] = {
            "n": int(rows.sum()),
            "quality": round(float(correct[rows].mean()), _Q),
            "cost_per_query_usd": round(float(cost[rows].mean()), 9),
            "start_mix": _mix(start[rows], names),
            "tier_mix": _mix(final[rows], names),
        }
    return out


def _mix(tiers: Any, names: Sequence[str]) -> dict[str, float]:
    counts = np.bincount(np.clip(tiers, 0, None), minlength=len(names)) / max(len(tiers), 1)
    return {name: round(float(v), _Q) for name, v in zip(names, counts, strict=True)}


def served_report(
    data: EvalData,
    outcomes: Mapping[str, Sequence[Outcome]],
    truth: GroundTruth,
    *,
    settings: Settings,
    bundle: ServedBundle,
    descriptions: Mapping[str, str],
    ladder: str,
) -> dict[str, Any]:
    """report.json of an as-served evaluation: each strategy overall and per task slice,
    against always-top, always-mid and the reference tier's baseline, and the goals."""
    names = [t.name for t in settings.tiers]
    n_tiers = len(names)
    reference = reference_tier(settings)
    baselines = {
        "always_expensive": TOP,
        "always_mid": MID,
        "reference": always_name(names.index(reference), n_tiers),
    }
    correct = {name: correctness(items, data, truth, n_tiers) for name, items in outcomes.items()}
    strategies: dict[str, Any] = {}
    for name, items in outcomes.items():
        entry = {
            "description": descriptions.get(name, ""),
            **strategy_metrics(items, data, truth, names),
        }
        entry["per_task"] = _slices(items, data, correct[name], names)
        strategies[name] = entry
    for entry in strategies.values():
        entry["versus"] = {key: versus(entry, strategies[base]) for key, base in baselines.items()}
        for task, figures in entry["per_task"].items():
            figures["versus"] = {
                key: versus(figures, strategies[base]["per_task"][task])
                for key, base in baselines.items()
            }
    report: dict[str, Any] = {
        "evaluation": "as_served",
        "figures": (
            f"{FIGURES}: bundle {bundle.version} loaded as a server loads it, its ONNX models "
            "and thresholds.json operating points; no refit and no re-solving on this file"
        ),
        "n": len(data.records),
        "data_sha256": data.sha256,
        "data_file": data.path.name,
        "tiers": names,
        "bundle": bundle.as_dict(),
        "reference_tier": {"tier": reference, "baseline": baselines["reference"]},
        "strategies": strategies,
        "default": bundle.default_name,
        "goals": _goals(strategies, correct, bundle, ladder),
    }
    return report


def _goals(
    strategies: Mapping[str, Any],
    correct: Mapping[str, Any],
    bundle: ServedBundle,
    ladder: str,
) -> dict[str, Any]:
    out = {}
    for point, (points_within, share, max_ratio) in GOALS[ladder].items():
        name = bundle.default_name if point == "default" else bundle.strategy_name(point)
        if name not in strategies:
            continue
        top = strategies[TOP]
        vs = strategies[name]["versus"]["always_expensive"]
        if points_within is not None:
            quality_met = vs["quality_diff"] >= -points_within - 1e-12
            quality = f"quality within {points_within * 100:g} points of always-top's"
        else:
            assert share is not None  # every goal bounds quality one way
            quality_met = strategies[name]["quality"] >= share * top["quality"] - 1e-12
            quality = f"quality >= {share:g} x always-top's"
        ratio = vs["cost_ratio"]
        cost_met = ratio is not None and ratio <= max_ratio + 1e-12
        out[point] = {
            **paired_noise(correct[name], correct[TOP]),
            "strategy": name,
            "statement": f"{quality} at >= {1 / max_ratio:g}x cheaper ({FIGURES})",
            "quality_diff_vs_always_expensive": vs["quality_diff"],
            "quality_ratio_vs_always_expensive": vs["quality_ratio"],
            "times_cheaper": vs["times_cheaper"],
            "quality_met": quality_met,
            "cost_met": cost_met,
            "met": quality_met and cost_met,
        }
    return out


def served_markdown(report: Mapping[str, Any]) -> str:
    """The as-served report's tables as Markdown (summary.md; printed by the CLI)."""
    strategies: Mapping[str, Mapping[str, Any]] = report["strategies"]
    ref = report["reference_tier"]
    lines = [
        f"**{FIGURES.capitalize()}**: bundle {report['bundle']['version']} on "
        f"{report['data_file']} (n = {report['n']}, SHA-256 {str(report['data_sha256'])[:12]}...), "
        f"{report['pricing']['ladder']} prices; reference tier {ref['tier']}.",
        "",
        "| strategy | quality | $/query | vs top (points) | x cheaper than top "
        "| vs mid (points) | x cheaper than mid | vs reference (points) | x cheaper than reference "
        "| start mix c/m/e |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in strategies.items():
        label = f"**`{name}`**" if name == report["default"] else f"`{name}`"
        v = s["versus"]
        mix = "/".join(f"{s['start_mix'][t]:.2f}" for t in report["tiers"])
        lines.append(
            f"| {label} | {s['quality']:.4f} | {s['cost_per_query_usd']:.6f} "
            f"| {_points(v['always_expensive'])} | {times_cheaper(v['always_expensive'])} "
            f"| {_points(v['always_mid'])} | {times_cheaper(v['always_mid'])} "
            f"| {_points(v['reference'])} | {times_cheaper(v['reference'])} | {mix} |"
        )
    tasks = sorted({t for s in strategies.values() for t in s["per_task"]})
    lines += [
        "",
        f"Per task ({FIGURES}): quality, points vs always-top, x cheaper than top / than mid:",
        "",
        "| strategy | " + " | ".join(tasks) + " |",
        "|---|" + "---:|" * len(tasks),
    ]
    for name, s in strategies.items():
        cells = []
        for task in tasks:
            t = s["per_task"].get(task)
            if t is None:
                cells.append("")
                continue
            cells.append(
                f"{t['quality']:.3f} {_points(t['versus']['always_expensive'])} "
                f"{times_cheaper(t['versus']['always_expensive'])} / "
                f"{times_cheaper(t['versus']['always_mid'])}"
            )
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Records per task: "
        + ", ".join(
            f"{task} {next(iter(strategies.values()))['per_task'][task]['n']}" for task in tasks
        )
    )
    lines += check_lines(report)
    for point, g in report.get("goals", {}).items():
        low, high = g.get("quality_diff_ci95") or (float("nan"), float("nan"))
        ratio = g["quality_ratio_vs_always_expensive"]
        cheaper = g["times_cheaper"]
        lines.append(
            f"goal {point} ({g['statement']}) on `{g['strategy']}`: "
            f"{'met' if g['met'] else 'not met'} "
            f"({g['quality_diff_vs_always_expensive'] * 100:+.2f} points "
            f"[{low * 100:+.2f}, {high * 100:+.2f}], "
            f"{ratio if ratio is not None else float('nan'):.4f} x top's quality, "
            f"{cheaper if cheaper is not None else float('nan'):.2f}x cheaper)"
        )
    return "\n".join(lines) + "\n"


def _points(v: Mapping[str, Any]) -> str:
    return f"{v['quality_diff'] * 100:+.2f}"


def times_cheaper(v: Mapping[str, Any]) -> str:
    """A report entry's times-cheaper figure as `2.41x`, `n/a` when there is none."""
    t = v["times_cheaper"]
    return f"{t:.2f}x" if t is not None else "n/a"
