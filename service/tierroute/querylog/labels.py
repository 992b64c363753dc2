"""What `tierroute label` stores per logged question and tier: the tier's answer, its
tokens and cost, and the reference judge's verdict on it (table `tier_labels`, migration
0005).

A row is one tier's answer to one logged question (`request_id` of the query record that
holds the question's text) and one judge call about it. Rows are written as soon as both
calls are paid for; (request_id, tier) is unique, so a resumed run skips what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierroute.querylog.records import _json_field, parse_ts, ts_text, utc_now

VERDICTS = ("pass", "fail", "unavailable")


@dataclass(frozen=True)
class TierLabel:
    """One tier's answer to a logged question and the reference judge's verdict on it."""

    request_id: str
    tier: str
    model: str
    answer_text: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    judge_tier: str
    judge_model: str
    # "pass", "fail" or "unavailable" (the judge gave no usable verdict).
    verdict: str
    issues: tuple[str, ...] = ()
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    judge_cost_usd: float = 0.0
    stop_reason: str = ""
    ts: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if not self.request_id or not self.tier:
            raise ValueError("a tier label needs a request id and a tier")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        object.__setattr__(self, "ts", parse_ts(self.ts))

    @property
    def total_cost_usd(self) -> float:
        """What labelling this tier cost: its answer and the judge call."""
        return self.cost_usd + self.judge_cost_usd


LABEL_COLUMNS = (
    "request_id", "tier", "ts", "model", "answer_text", "stop_reason", "input_tokens",
    "output_tokens", "cost_usd", "judge_tier", "judge_model", "verdict", "issues",
    "judge_input_tokens", "judge_output_tokens", "judge_cost_usd",
)  # fmt: skip


def label_to_json(label: TierLabel) -> dict[str, Any]:
    """The JSON-ready (column) form of a tier label."""
    return {
        "request_id": label.request_id,
        "tier": label.tier,
        "ts": ts_text(label.ts),
        "model": label.model,
        "answer_text": label.answer_text,
        "stop_reason": label.stop_reason,
        "input_tokens": label.input_tokens,
        "output_tokens": label.output_tokens,
        "cost_usd": label.cost_usd,
        "judge_tier": label.judge_tier,
        "judge_model": label.judge_model,
        "verdict": label.verdict,
        "issues": list(label.issues),
        "judge_input_tokens": label.judge_input_tokens,
        "judge_output_tokens": label.judge_output_tokens,
        "judge_cost_usd": label.judge_cost_usd,
    }


def label_from_json(data: Mapping[str, Any]) -> TierLabel:
    """Rebuild a tier label from `label_to_json` output or a stored row mapping."""
    answer = data.get("answer_text")
    return TierLabel(
        request_id=str(data["request_id"]),
        tier=str(data["tier"]),
        ts=parse_ts(data["ts"]),
        model=str(data.get("model") or ""),
        answer_text=None if answer is None else str(answer),
        stop_reason=str(data.get("stop_reason") or ""),
        input_tokens=int(data.get("input_tokens") or 0),
        output_tokens=int(data.get("output_tokens") or 0),
        cost_usd=float(data.get("cost_usd") or 0.0),
        judge_tier=str(data.get("judge_tier") or ""),
        judge_model=str(data.get("judge_model") or ""),
        verdict=str(data.get("verdict") or "unavailable"),
        issues=tuple(str(i) for i in _json_field(data.get("issues"), [])),
        judge_input_tokens=int(data.get("judge_input_tokens") or 0),
        judge_output_tokens=int(data.get("judge_output_tokens") or 0),
        judge_cost_usd=float(data.get("judge_cost_usd") or 0.0),
    )
