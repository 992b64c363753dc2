"""What the query log says about whether a logged answer was right: the user's feedback, the
Cascade's judge verdicts and the labels `tierroute label` wrote. Shared by retraining from
the log and by `tierroute adapt`, which read the same evidence the same way.

- Feedback: a correct/incorrect flag wins over a rating; a rating of 4-5 counts as right,
  1-2 as wrong, 3 as no evidence; the latest of each kind counts.
- A judge verdict on a Cascade hop is about the answer of the tier below the judge's tier.
- A tier label's verdict is the reference judge's: pass right, fail wrong, unavailable no
  evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from tierroute.querylog.labels import TierLabel
from tierroute.querylog.records import FeedbackRecord, QueryRecord

GOOD_RATING = 4
BAD_RATING = 2


def hop_value(value: Any, prefix: str) -> str:
    """A hop's role, outcome or verdict upper-cased without its proto enum prefix (hops hold
    lower-case values; the proto names, `JUDGE_VERDICT_PASS`, are accepted too)."""
    return str(value or "").upper().removeprefix(prefix)


def latest_feedback(
    feedback: Iterable[FeedbackRecord],
) -> tuple[dict[str, int], dict[str, bool]]:
    """Request id -> the latest rating, and request id -> the latest correct/incorrect flag.

    Later feedback replaces earlier; at equal times the later-stored one wins.
    """
    ratings: dict[str, tuple[datetime, int]] = {}
    flags: dict[str, tuple[datetime, bool]] = {}
    for fb in feedback:
        if fb.rating is not None and (
            fb.request_id not in ratings or fb.ts >= ratings[fb.request_id][0]
        ):
            ratings[fb.request_id] = (fb.ts, fb.rating)
        if fb.correct is not None and (
            fb.request_id not in flags or fb.ts >= flags[fb.request_id][0]
        ):
            flags[fb.request_id] = (fb.ts, fb.correct)
    return {k: v for k, (_, v) in ratings.items()}, {k: v for k, (_, v) in flags.items()}


def feedback_verdicts(feedback: Iterable[FeedbackRecord]) -> dict[str, bool]:
    """Request id -> whether the user found the final answer right, from the latest feedback.

    A correct/incorrect flag wins over a rating; a rating of 4-5 counts as right, 1-2 as
    wrong, and 3 as no evidence.
    """
    ratings, flags = latest_feedback(feedback)
    out: dict[str, bool] = {}
    for request_id, rating in ratings.items():
        if rating >= GOOD_RATING:
            out[request_id] = True
        elif rating <= BAD_RATING:
            out[request_id] = False
    out.update(flags)
    return out


def judged_tiers(record: QueryRecord, tier_names: Sequence[str]) -> Iterator[tuple[int, bool]]:
    """(tier index, passed) for each of the record's judge hops that ended with a pass or
    fail verdict on the answer of the tier below the judge's, in hop order."""
    index = {name: i for i, name in enumerate(tier_names)}
    for hop in record.hops:
        if hop_value(hop.get("role"), "HOP_ROLE_") != "JUDGE":
            continue
        if hop_value(hop.get("outcome"), "HOP_OUTCOME_") != "OK":
            continue
        verdict = hop_value(hop.get("verdict"), "JUDGE_VERDICT_")
        judged = index.get(str(hop.get("tier")), 0) - 1
        if judged >= 0 and verdict in ("PASS", "FAIL"):
            yield judged, verdict == "PASS"


def judge_verdicts(record: QueryRecord, tier_names: Sequence[str]) -> dict[int, bool]:
    """Tier index -> the Cascade's judge verdict on that tier's answer (pass True, fail
    False), from the record's judge hops that ended with one; the last verdict counts."""
    return dict(judged_tiers(record, tier_names))


def label_verdicts(
    labels: Iterable[TierLabel], tier_names: Sequence[str]
) -> dict[str, dict[int, bool]]:
    """Request id -> tier index -> the reference judge's verdict (unavailable: none)."""
    index = {name: i for i, name in enumerate(tier_names)}
    out: dict[str, dict[int, bool]] = {}
    for label in labels:
        tier = index.get(label.tier)
        if tier is not None and label.verdict in ("pass", "fail"):
            out.setdefault(label.request_id, {})[tier] = label.verdict == "pass"
    return out


def tier_outcomes(
    record: QueryRecord,
    tier_names: Sequence[str],
    *,
    labels: Mapping[int, bool] | None = None,
    user_verdict: bool | None = None,
) -> dict[int, tuple[bool, str]]:
    """Tier index -> (was its answer right, the evidence: "label", "feedback" or "judge"),
    for the tiers the log has evidence on; the strongest evidence wins: a tier label, then
    the user's feedback (about the tier that answered), then a judge verdict."""
    out: dict[int, tuple[bool, str]] = {
        tier: (right, "judge") for tier, right in judge_verdicts(record, tier_names).items()
    }
    final = {name: i for i, name in enumerate(tier_names)}.get(record.final_tier)
    if user_verdict is not None and final is not None:
        out[final] = (user_verdict, "feedback")
    for tier, right in (labels or {}).items():
        out[tier] = (right, "label")
    return out


__all__ = [
    "BAD_RATING",
    "GOOD_RATING",
    "feedback_verdicts",
    "hop_value",
    "judge_verdicts",
    "label_verdicts",
    "tier_outcomes",
]
