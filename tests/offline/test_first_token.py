"""The time-to-first-token section of the evaluation report."""

from __future__ import annotations

from tierroute.offline.evaluation.first_token import first_token_markdown, first_token_report
from tierroute.offline.evaluation.harness import Outcome


def _outcome(record_id: str, latency_ms: float, **extra: object) -> Outcome:
    fields: dict[str, object] = {
        "record_id": record_id,
        "start_tier": 0,
        "final_tier": 0,
        "cost_usd": 0.001,
        "judge_cost_usd": 0.0,
        "latency_ms": latency_ms,
        "escalated": False,
        "judged": False,
        "judge_status": "not_required",
        "degraded": False,
        "truncated": False,
        "calls": 1,
    }
    fields.update(extra)
    return Outcome(**fields)  # type: ignore[arg-type]


def test_a_stream_that_failed_after_its_text_began_is_counted_apart() -> None:
    """A stream cut off by the deadline mid-answer is left out of the percentiles and counted."""
    unary = [_outcome("a", 1000.0), _outcome("b", 2000.0), _outcome("c", 90_000.0)]
    streamed = [
        _outcome("a", 1000.0, first_token_ms=400.0),
        _outcome("b", 2000.0, first_token_ms=600.0, escalated=True),
        _outcome("c", 300_000.0, first_token_ms=800.0, stream_error="DeadlineExceeded"),
    ]
    section = first_token_report(unary, streamed, "shipped")
    assert section["stream_errors"] == 1
    assert (section["all"]["n"], section["escalated"]["n"], section["not_escalated"]["n"]) == (
        2,
        1,
        1,
    )
    assert section["all"]["stream"]["p95_ms"] <= 600.0
    assert any(
        "1 streamed requests ended in an error" in line for line in first_token_markdown(section)
    )
