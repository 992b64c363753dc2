"""Scored figures per strategy, and the `report.json` document built from them.

Schema (stable; docs/EVALUATION.md documents every key):
`{"n", "data_sha256", "strategies": {NAME: {"quality", "cost_per_query_usd",
"judge_cost_per_query_usd", "tier_mix", "escalation_rate", "p50_latency_ms",
"p95_latency_ms", "per_task": {TASK: {"quality", "cost_per_query_usd"}}, ...}}, "default"}`
plus the comparison with always-expensive per strategy and, at the top level, how the data,
prices and cross-validation were set up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.evaluation.first_token import first_token_markdown
from tierroute.offline.evaluation.harness import Outcome
from tierroute.offline.evaluation.scoring import NO_TIER, GroundTruth

REPORT_FILE = "report.json"
PLOT_FILE = "frontier.png"
SUMMARY_FILE = "summary.md"
SCHEMA_VERSION = 1
REFERENCE = "always_expensive"
FLOOR = "always_cheap"
GOAL_COST_RATIO = 1 / 3
_Q, _USD, _MS = 6, 9, 1


def correctness(
    outcomes: Sequence[Outcome], data: EvalData, truth: GroundTruth, n_tiers: int
) -> npt.NDArray[np.float64]:
    """1/0 per record: whether the recorded model that gave the final answer was correct."""
    return np.array(
        [
            truth.is_correct(record.replay_id, record.model_for(outcome.final_tier, n_tiers))
            for record, outcome in zip(data.records, outcomes, strict=True)
        ],
        dtype=np.float64,
    )


def _mix(tiers: npt.NDArray[np.int64], names: Sequence[str]) -> dict[str, float]:
    counts = np.bincount(tiers, minlength=len(names)) / max(len(tiers), 1)
    return {name: round(float(v), _Q) for name, v in zip(names, counts, strict=True)}


def strategy_metrics(
    outcomes: Sequence[Outcome], data: EvalData, truth: GroundTruth, tier_names: Sequence[str]
) -> dict[str, Any]:
    """The report entry of one strategy (without the comparison with always-expensive)."""
    correct = correctness(outcomes, data, truth, len(tier_names))
    cost = np.array([o.cost_usd for o in outcomes])
    judge = np.array([o.judge_cost_usd for o in outcomes])
    latency = np.array([o.latency_ms for o in outcomes])
    final = np.array([o.final_tier for o in outcomes], dtype=np.int64)
    start = np.array([o.start_tier for o in outcomes], dtype=np.int64)
    tasks = np.array([r.task for r in data.records])
    per_task = {
        task: {
            "quality": round(float(correct[tasks == task].mean()), _Q),
            "cost_per_query_usd": round(float(cost[tasks == task].mean()), _USD),
        }
        for task in data.tasks()
    }
    return {
        "quality": round(float(correct.mean()), _Q),
        "cost_per_query_usd": round(float(cost.mean()), _USD),
        "judge_cost_per_query_usd": round(float(judge.mean()), _USD),
        "tier_mix": _mix(final, tier_names),
        "escalation_rate": round(float(np.mean([o.escalated for o in outcomes])), _Q),
        "p50_latency_ms": round(float(np.percentile(latency, 50)), _MS),
        "p95_latency_ms": round(float(np.percentile(latency, 95)), _MS),
        "per_task": per_task,
        "start_mix": _mix(start, tier_names),
        "judged_rate": round(float(np.mean([o.judged for o in outcomes])), _Q),
        "degraded_rate": round(float(np.mean([o.degraded for o in outcomes])), _Q),
        "truncated_rate": round(float(np.mean([o.truncated for o in outcomes])), _Q),
        "calls_per_query": round(float(np.mean([o.calls for o in outcomes])), _Q),
    }


def compare(
    entry: Mapping[str, Any], reference: Mapping[str, Any], floor: Mapping[str, Any]
) -> dict[str, Any]:
    """Cost ratio and quality difference against always-expensive, and the gap recovered.

    gap_recovered = (quality - q_cheap) / (q_expensive - q_cheap): 0 is always-cheap's
    quality, 1 is always-expensive's; above 1 beats always-expensive. None when the two
    baselines have the same quality.
    """
    q, c = entry["quality"], entry["cost_per_query_usd"]
    q_ref, c_ref, q_floor = reference["quality"], reference["cost_per_query_usd"], floor["quality"]
    gap = q_ref - q_floor
    return {
        "cost_ratio_vs_always_expensive": round(c / c_ref, _Q) if c_ref else None,
        "quality_diff_vs_always_expensive": round(q - q_ref, _Q),
        "gap_recovered": round((q - q_floor) / gap, _Q) if gap else None,
    }


BOOTSTRAP_RESAMPLES = 2000


def paired_noise(
    correct: npt.NDArray[np.float64], reference: npt.NDArray[np.float64], seed: int = 0
) -> dict[str, Any]:
    """How much of a quality difference is noise: per-record paired differences.

    The standard error of the mean difference, and a seeded percentile-bootstrap 95 %
    interval over records (the same records answered by both strategies).
    """
    diff = correct - reference
    n = len(diff)
    if n < 2:
        return {"quality_diff_se": None, "quality_diff_ci95": None}
    se = float(diff.std(ddof=1) / np.sqrt(n))
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, n, n)].mean() for _ in range(BOOTSTRAP_RESAMPLES)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "quality_diff_se": round(se, _Q),
        "quality_diff_ci95": [round(float(low), _Q), round(float(high), _Q)],
        "bootstrap": f"{BOOTSTRAP_RESAMPLES} paired resamples of records, seed {seed}",
    }


def goal(
    entry: Mapping[str, Any], name: str, noise: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Whether `entry` meets the product goal: always-expensive quality at <= 1/3 its cost.

    `met` is the strict reading of the point estimates; `noise` (from `paired_noise`) says
    how far the quality difference could move on other data of the same kind.
    """
    ratio = entry.get("cost_ratio_vs_always_expensive")
    diff = entry["quality_diff_vs_always_expensive"]
    return {
        **(noise or {}),
        "strategy": name,
        "statement": "quality >= always_expensive at cost <= 1/3 of always_expensive",
        "quality_met": diff >= 0,
        "cost_met": ratio is not None and ratio <= GOAL_COST_RATIO + 1e-12,
        "met": diff >= 0 and ratio is not None and ratio <= GOAL_COST_RATIO + 1e-12,
        "quality_diff_vs_always_expensive": diff,
        "cost_ratio_vs_always_expensive": ratio,
    }


# Issue 13's goals per operating point and price ladder: (quality at least this share of
# always-expensive's, cost at most this share of its cost).
POINT_GOALS: Mapping[str, Mapping[str, tuple[float, float]]] = {
    "recorded": {"parity": (1.0, 1 / 4), "q95": (0.95, 1 / 10)},
    "config": {"parity": (1.0, 1 / 2), "q95": (0.95, 1 / 4)},
}


def point_goal(
    entry: Mapping[str, Any],
    reference: Mapping[str, Any],
    name: str,
    bounds: tuple[float, float],
    noise: Mapping[str, Any],
) -> dict[str, Any]:
    """Whether an operating point's strategy meets its goal: quality >= a share of
    always-expensive's at <= a share of its cost; `noise` as `paired_noise` gives it."""
    share, max_ratio = bounds
    ratio = entry.get("cost_ratio_vs_always_expensive")
    quality_ratio = entry["quality"] / reference["quality"] if reference["quality"] else None
    quality_met = entry["quality"] >= share * reference["quality"] - 1e-12
    cost_met = ratio is not None and ratio <= max_ratio + 1e-12
    return {
        **noise,
        "strategy": name,
        "statement": f"quality >= {share:g} x always_expensive's at cost <= 1/{1 / max_ratio:g} "
        "of always_expensive's",
        "quality_ratio_vs_always_expensive": None
        if quality_ratio is None
        else round(quality_ratio, _Q),
        "quality_diff_vs_always_expensive": entry["quality_diff_vs_always_expensive"],
        "cost_ratio_vs_always_expensive": ratio,
        "times_cheaper": round(1 / ratio, 3) if ratio else None,
        "quality_met": quality_met,
        "cost_met": cost_met,
        "met": quality_met and cost_met,
    }


def misroutes(final: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> tuple[float, float]:
    """(up, down): shares answered above / below the cheapest correct tier.

    Records no tier got right count as neither: no tier was the right one for them.
    """
    known = labels != NO_TIER
    n = max(len(final), 1)
    up = float(np.sum(known & (final > labels))) / n
    down = float(np.sum(known & (final < labels))) / n
    return up, down


def build_report(
    data: EvalData,
    outcomes: Mapping[str, Sequence[Outcome]],
    truth: GroundTruth,
    *,
    tier_names: Sequence[str],
    descriptions: Mapping[str, str],
    default: str,
    goal_strategy: str,
    extra: Mapping[str, Any],
    point_goals: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """The whole report.json document; `point_goals` maps strategies (the operating
    points) to their (quality share, cost share) goal against always-expensive."""
    strategies: dict[str, Any] = {}
    for name, items in outcomes.items():
        strategies[name] = {
            "description": descriptions.get(name, ""),
            **strategy_metrics(items, data, truth, tier_names),
        }
    if REFERENCE in strategies and FLOOR in strategies:
        for entry in strategies.values():
            entry.update(compare(entry, strategies[REFERENCE], strategies[FLOOR]))
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "n": len(data.records),
        "data_sha256": data.sha256,
        "data_file": data.path.name,
        "tiers": list(tier_names),
        "strategies": strategies,
        "default": default,
        **extra,
    }
    if goal_strategy in strategies and REFERENCE in strategies:
        n_tiers = len(tier_names)
        noise = paired_noise(
            correctness(outcomes[goal_strategy], data, truth, n_tiers),
            correctness(outcomes[REFERENCE], data, truth, n_tiers),
        )
        report["goal"] = goal(strategies[goal_strategy], goal_strategy, noise)
    if point_goals and REFERENCE in strategies:
        n_tiers = len(tier_names)
        reference = correctness(outcomes[REFERENCE], data, truth, n_tiers)
        report["goals"] = {
            name: point_goal(
                strategies[name],
                strategies[REFERENCE],
                name,
                bounds,
                paired_noise(correctness(outcomes[name], data, truth, n_tiers), reference),
            )
            for name, bounds in point_goals.items()
            if name in strategies
        }
    return report


def write_json(path: Path, document: Any) -> None:
    """Write `document` as stable, reviewable JSON (sorted keys, two-space indent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def markdown_summary(report: Mapping[str, Any]) -> str:
    """The report's headline tables as Markdown (written beside report.json as summary.md).

    docs/EVALUATION.md quotes these tables, so its figures come from a command anyone can
    rerun rather than from hand-copied numbers.
    """
    strategies: Mapping[str, Mapping[str, Any]] = report["strategies"]
    default = report.get("default")
    lines = [
        f"n = {report['n']}, data SHA-256 {str(report['data_sha256'])[:12]}..., "
        f"bundle {report.get('bundle')}",
        "",
        "| strategy | quality | $/query | judge $/query | x always-exp. "
        "| quality vs always-exp. | gap recovered | final mix c/m/e | escalated "
        "| p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, s in strategies.items():
        mix = s["tier_mix"]
        label = f"**`{name}`**" if name == default else f"`{name}`"
        lines.append(
            f"| {label} | {s['quality']:.4f} | {s['cost_per_query_usd']:.6f} "
            f"| {s['judge_cost_per_query_usd']:.6f} "
            f"| {s.get('cost_ratio_vs_always_expensive', float('nan')):.3f} "
            f"| {s.get('quality_diff_vs_always_expensive', float('nan')):+.4f} "
            f"| {s.get('gap_recovered', float('nan')):.3f} "
            f"| {mix.get('cheap', 0):.2f}/{mix.get('mid', 0):.2f}/{mix.get('expensive', 0):.2f} "
            f"| {s['escalation_rate']:.3f} | {s['p50_latency_ms']:.0f} "
            f"| {s['p95_latency_ms']:.0f} |"
        )
    tasks = sorted({t for s in strategies.values() for t in s.get("per_task", {})})
    lines += [
        "",
        "Per task, quality / cost per query:",
        "",
        "| strategy | " + " | ".join(tasks) + " |",
        "|---|" + "---:|" * len(tasks),
    ]
    for name, s in strategies.items():
        cells = []
        for task in tasks:
            t = s.get("per_task", {}).get(task)
            cells.append(f"{t['quality']:.3f} / ${t['cost_per_query_usd']:.5f}" if t else "")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    goal = report.get("goal")
    if goal:
        lines += ["", f"goal: {json.dumps(goal, sort_keys=True)}"]
    if "time_to_first_token" in report:
        lines += first_token_markdown(report["time_to_first_token"])
    return "\n".join(lines) + "\n"
