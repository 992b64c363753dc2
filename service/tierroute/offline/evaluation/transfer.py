"""The transfer table: bundles served, as they are, on traffic they were not trained on.

For each held-out part (a task of dev the bundle never saw, or a share of dev's duplicate
groups), `tierroute transfer` trains and calibrates a bundle on the rest with the product's
own commands and evaluates it with `eval --as-served` on the part. This module turns those
as-served reports into one table: per part, each operating point's quality and cost against
always-top, always-mid and the reference tier's baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tierroute.offline.evaluation.as_served import FIGURES, times_cheaper

TRANSFER_FILE = "transfer.json"


def transfer_row(part: str, split: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """One part's row: the served bundle's points and the baselines on the held-out records."""
    strategies = report["strategies"]
    points = {
        name: {
            "quality": s["quality"],
            "cost_per_query_usd": s["cost_per_query_usd"],
            "start_mix": s["start_mix"],
            "versus": s["versus"],
        }
        for name, s in strategies.items()
        if name.startswith("served")
    }
    return {
        "part": part,
        "rule": split["rule"],
        "trained_on": split["records"]["train"],
        "n": report["n"],
        "bundle": report["bundle"]["version"],
        "default": report["default"],
        "tiers": list(report["tiers"]),
        "baselines": {
            name: {"quality": s["quality"], "cost_per_query_usd": s["cost_per_query_usd"]}
            for name, s in strategies.items()
            if name.startswith("always_")
        },
        "served": points,
        "goals": report.get("goals", {}),
    }


def transfer_document(
    rows: list[dict[str, Any]], *, source: str, prices: str, reference: Mapping[str, Any]
) -> dict[str, Any]:
    """transfer.json: the rows, and how they were made."""
    return {
        "evaluation": "transfer",
        "figures": (
            f"{FIGURES}: per part, a bundle trained (model_export/build.py's training) and "
            "calibrated (`tierroute calibrate`) on the rest of the file, served as-is "
            "(`tierroute eval --as-served`) on the part"
        ),
        "source": source,
        "prices": prices,
        "reference_tier": dict(reference),
        "rows": rows,
    }


def transfer_markdown(document: Mapping[str, Any]) -> str:
    """The transfer table as Markdown: one line per part and operating point."""
    ref = document["reference_tier"]
    lines = [
        f"**{FIGURES.capitalize()}, transfer** ({document['source']}, {document['prices']} "
        f"prices, reference tier {ref['tier']}): each part served by a bundle trained and "
        "calibrated without it.",
        "",
        "| held out | n | point | quality | always-top | points vs top | x cheaper than top "
        "| always-mid | points vs mid | cost vs mid | points vs ref. | x cheaper than ref. "
        "| start mix c/m/e |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in document["rows"]:
        if "error" in row:
            lines.append(f"| {row['part']} | | not served: {row['error']} |" + " |" * 10)
            continue
        top = row["baselines"]["always_expensive"]
        mid = row["baselines"]["always_mid"]
        for name, s in row["served"].items():
            v = s["versus"]
            mark = " (default)" if name == row["default"] else ""
            cost_mid = v["always_mid"]["cost_ratio"]
            lines.append(
                f"| {row['part']} | {row['n']} | `{name}`{mark} | {s['quality']:.4f} "
                f"| {top['quality']:.4f} | {v['always_expensive']['quality_diff'] * 100:+.2f} "
                f"| {times_cheaper(v['always_expensive'])} | {mid['quality']:.4f} "
                f"| {v['always_mid']['quality_diff'] * 100:+.2f} "
                f"| {'n/a' if cost_mid is None else f'{cost_mid:.2f}x'} "
                f"| {v['reference']['quality_diff'] * 100:+.2f} | {times_cheaper(v['reference'])} "
                f"| {_mix(s['start_mix'], row['tiers'])} |"
            )
    if "wall_time_s" in document:
        lines += ["", f"Wall time: {document['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def _mix(mix: Mapping[str, float], tiers: Sequence[str]) -> str:
    return "/".join(f"{mix[t]:.2f}" for t in tiers)
