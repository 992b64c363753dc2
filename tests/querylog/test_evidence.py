"""`querylog.evidence`: what the log says about whether a tier's answer was right, and which
evidence wins when several speak about the same tier."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tierroute.querylog import FeedbackRecord, HopRecord, TierLabel
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.evidence import (
    feedback_verdicts,
    judge_verdicts,
    label_verdicts,
    tier_outcomes,
)

TIERS = ("cheap", "mid", "expensive")


def judged_by_mid(verdict: str) -> HopRecord:
    """A mid-tier judge hop with `verdict` (about the cheap tier's answer)."""
    answer = sample_record("x").hops[0]
    return {**answer, "tier": "mid", "role": "judge", "verdict": verdict, "model": "judge-model"}


def test_a_judge_verdict_is_about_the_tier_below_the_judge() -> None:
    """A mid judge's fail is evidence that the cheap tier's answer was wrong."""
    record = sample_record("r", hops=[*sample_record("r").hops, judged_by_mid("fail")])
    assert judge_verdicts(record, TIERS) == {0: False}


def test_a_flag_beats_a_rating_and_a_3_says_nothing() -> None:
    """correct=False wins over a 5-star rating; a lone rating of 3 is no evidence."""
    first = FeedbackRecord(request_id="a", rating=5)
    flag = FeedbackRecord(request_id="a", correct=False, ts=first.ts + timedelta(seconds=1))
    assert feedback_verdicts([first, flag, FeedbackRecord(request_id="b", rating=3)]) == {
        "a": False
    }


def test_an_unavailable_label_is_no_evidence() -> None:
    """Only pass and fail labels count."""
    labels = [
        TierLabel("r", "cheap", "m", None, 1, 1, 0.0, "expensive", "m", "unavailable"),
        TierLabel("r", "mid", "m", None, 1, 1, 0.0, "expensive", "m", "pass"),
    ]
    assert label_verdicts(labels, TIERS) == {"r": {1: True}}


def test_a_label_beats_feedback_which_beats_a_judge() -> None:
    """On the same tier the label decides; without it the user's feedback beats the judge."""
    record = replace(
        sample_record("r", hops=[*sample_record("r").hops, judged_by_mid("pass")]),
        final_tier="cheap",
    )
    assert tier_outcomes(record, TIERS, user_verdict=False) == {0: (False, "feedback")}
    assert tier_outcomes(record, TIERS, labels={0: True}, user_verdict=False) == {
        0: (True, "label")
    }
    assert tier_outcomes(record, TIERS) == {0: (True, "judge")}
