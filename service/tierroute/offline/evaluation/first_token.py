"""Time to first token of the streamed Cascade against the unary one, in simulated time.

The unary Cascade's caller sees the first token when the whole response arrives, so its
time to first token is its total latency. The streamed run answers the same records the
way CascadeStream does (streamed provider calls, the commit point) on the same virtual
clock, so the two are measured alike and their ratio is the signal; the latency model
(docs/replay.md) sets the absolute figures. Records are split by whether the answer came
from above the start tier, because an escalation is where the two differ most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tierroute.offline.evaluation.harness import Outcome

_MS = 1


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}
    array = np.array(values, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(array, 50)), _MS),
        "p95_ms": round(float(np.percentile(array, 95)), _MS),
    }


def first_token_report(
    unary: Sequence[Outcome], streamed: Sequence[Outcome], strategy: str
) -> dict[str, Any]:
    """p50 and p95 time to first token, unary and streamed, for escalated and other records."""
    if [o.record_id for o in unary] != [o.record_id for o in streamed]:
        raise ValueError("the unary and streamed runs must answer the same records in order")
    # A stream that failed after its text began (a deadline mid-answer) has no result to
    # group it by: it is counted apart, and left out of the percentiles.
    answered = [i for i, o in enumerate(streamed) if not o.stream_error]
    groups = {
        "all": answered,
        "escalated": [i for i in answered if streamed[i].escalated],
        "not_escalated": [i for i in answered if not streamed[i].escalated],
    }
    section: dict[str, Any] = {
        "strategy": strategy,
        "clock": "virtual (simulated latency)",
        "stream_errors": len(streamed) - len(answered),
    }
    for name, indices in groups.items():
        first = [streamed[i].first_token_ms for i in indices]
        unary_first = _percentiles([unary[i].latency_ms for i in indices])
        stream_first = _percentiles([t for t in first if t is not None])
        section[name] = {
            "n": len(indices),
            "unary": unary_first,
            "stream": stream_first,
            "stream_total": _percentiles([streamed[i].latency_ms for i in indices]),
            "ratio_p50": _ratio(stream_first["p50_ms"], unary_first["p50_ms"]),
            "ratio_p95": _ratio(stream_first["p95_ms"], unary_first["p95_ms"]),
        }
    return section


def _ratio(streamed: float, unary: float) -> float:
    return round(streamed / unary, 3) if unary > 0 else float("nan")


def first_token_markdown(section: Mapping[str, Any]) -> list[str]:
    """The section as a Markdown table (for summary.md and docs/BENCHMARKS.md)."""
    lines = [
        "",
        f"Time to first token, `{section['strategy']}`, {section['clock']}:",
        "",
        "| records | n | unary p50 ms | unary p95 ms | stream p50 ms | stream p95 ms "
        "| stream/unary p50 | stream/unary p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if section.get("stream_errors"):
        lines.insert(
            2,
            f"({section['stream_errors']} streamed requests ended in an error after their "
            "text began and are left out.)",
        )
    for name in ("all", "escalated", "not_escalated"):
        g = section[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {g['n']} | {g['unary']['p50_ms']:.0f} "
            f"| {g['unary']['p95_ms']:.0f} | {g['stream']['p50_ms']:.0f} "
            f"| {g['stream']['p95_ms']:.0f} | {g['ratio_p50']:.3f} | {g['ratio_p95']:.3f} |"
        )
    return lines
