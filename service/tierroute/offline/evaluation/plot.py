"""The cost-quality frontier plot of a report: each policy's curve over its knob, one marker
per strategy, the operating points marked, reference lines.

A report's `curves` (the value policy over its price of a correct answer, the classifier
over its risk threshold; from the calibration tables on out-of-fold estimates) are drawn
as lines; the grey line through the always-one-tier squares is random routing over its
tier mix. The `shipped@<point>` strategies, the operating points, are stars on the curve's
colour, each named.

Two panels: the whole frontier on a log cost axis, and a linear zoom on the region between
always-mid and always-expensive where the routers and cascades crowd together. Strategies
are told apart by marker and legend rather than by labels that would overlap.
matplotlib is part of the `train` extra and is imported only when a plot is drawn; the
figure is built without pyplot, so no global state or GUI backend is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierroute.offline.evaluation.summary import GOAL_COST_RATIO

_ALWAYS = ("always_cheap", "always_mid", "always_expensive")
_MARKERS = "oDv^<>phP*Xd8sH"


def _references(ax: Any, strategies: Mapping[str, Mapping[str, Any]]) -> None:
    always = [strategies[name] for name in _ALWAYS if name in strategies]
    if always:
        ax.plot(
            [s["cost_per_query_usd"] for s in always],
            [s["quality"] for s in always],
            color="0.6",
            linestyle="-",
            linewidth=1,
            zorder=1,
        )
    if "always_expensive" in strategies:
        top = strategies["always_expensive"]
        ax.axhline(top["quality"], color="0.3", linestyle="--", linewidth=1, zorder=1)
        ax.axvline(
            top["cost_per_query_usd"] * GOAL_COST_RATIO,
            color="0.3",
            linestyle=":",
            linewidth=1,
            zorder=1,
        )
    if "oracle" in strategies:
        ax.axhline(strategies["oracle"]["quality"], color="tab:green", linestyle="--", linewidth=1)


_CURVE_COLOURS = ("tab:purple", "tab:orange", "tab:brown", "tab:cyan")


def _curves(ax: Any, report: Mapping[str, Any], top_cost: float, labelled: bool) -> None:
    for colour, (name, points) in zip(
        _CURVE_COLOURS, report.get("curves", {}).items(), strict=False
    ):
        ax.plot(
            [p["cost_ratio_vs_always_expensive"] * top_cost for p in points],
            [p["quality"] for p in points],
            color=colour,
            linewidth=1.4,
            alpha=0.8,
            zorder=2,
            label=f"curve: {name}" if labelled else None,
        )


def _operating_points(ax: Any, strategies: Mapping[str, Mapping[str, Any]]) -> None:
    for name, entry in strategies.items():
        if "@" not in name:
            continue
        ax.scatter(
            entry["cost_per_query_usd"],
            entry["quality"],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=4,
        )
        ax.annotate(
            name.split("@", 1)[1],
            (entry["cost_per_query_usd"], entry["quality"]),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
        )


def plot_frontier(report: Mapping[str, Any], path: Path) -> None:
    """Draw cost per query against quality for every strategy of `report` into `path`."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    strategies: Mapping[str, Mapping[str, Any]] = report["strategies"]
    figure = Figure(figsize=(14, 6.5), dpi=100)
    full, zoom = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    colours = colormaps["tab20"]
    top_cost = strategies.get("always_expensive", {}).get("cost_per_query_usd", 0.0)
    for ax in (full, zoom):
        _references(ax, strategies)
        _curves(ax, report, top_cost, ax is full)
        _operating_points(ax, strategies)
    for i, (name, entry) in enumerate(strategies.items()):
        default = name == report.get("default")
        style = {
            "marker": "s" if name in _ALWAYS else _MARKERS[i % len(_MARKERS)],
            "color": "0.35" if name in _ALWAYS else colours(i % 20),
            "s": 110 if default else 55,
            "edgecolors": "black" if default else "none",
            "zorder": 3,
        }
        label = (
            f"{name}{' (default)' if default else ''}: {entry['quality']:.3f}, "
            f"${entry['cost_per_query_usd']:.5f}"
        )
        full.scatter(entry["cost_per_query_usd"], entry["quality"], label=label, **style)
        zoom.scatter(entry["cost_per_query_usd"], entry["quality"], **style)
    full.plot([], [], color="0.6", label="curve: random routing over its tier mix")
    full.set_xscale("log")
    full.set_xlabel("cost per query, USD (log scale; judge calls included)")
    full.set_ylabel("quality (share of answers correct)")
    full.set_title("the whole frontier")
    if "always_mid" in strategies and "always_expensive" in strategies:
        low = strategies["always_mid"]
        top = strategies["always_expensive"]
        zoom.set_xlim(low["cost_per_query_usd"] * 0.9, top["cost_per_query_usd"] * 1.05)
        zoom.set_ylim(low["quality"] - 0.005, top["quality"] + 0.008)
    zoom.set_xlabel("cost per query, USD (linear)")
    zoom.set_title("zoom: goal is at or above the dashed line, left of the dotted one", fontsize=10)
    for ax in (full, zoom):
        ax.grid(True, which="both", alpha=0.3)
    figure.legend(loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(
        f"tierroute cost-quality frontier on {report.get('data_file', 'data')} "
        f"({report['n']} queries, {report.get('pricing', {}).get('ladder', '')} prices)\ngrey "
        "squares: always one tier; green: oracle; lines: each policy over its knob (in-sample "
        "knob, out-of-fold estimates); stars: the operating points, cross-fitted"
    )
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software version in the file, so the same report draws the same bytes.
    figure.savefig(path, metadata={"Software": None})
