"""The shipped bundle on day one: easy developer questions (tests/easy_questions.txt, the seed
article's kind) through the shipped server's Cascade never start on the top tier, and at
least 80 % start on the cheapest tier."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.helpers import make_settings, running_server
from tierroute.v1 import tierroute_pb2 as pb

QUESTIONS = Path(__file__).resolve().parent.parent / "easy_questions.txt"


def questions() -> list[str]:
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


async def test_easy_questions_start_cheap_on_the_shipped_bundle() -> None:
    """30 easy questions through the shipped bundle's Cascade: none starts on the top tier,
    at least 80 % on the cheapest, each flagged UNFAMILIAR_QUERY."""
    settings = make_settings({"TIERROUTE_REPLAY_TIME_SCALE": "0"})
    tiers = [t.name for t in settings.tiers]
    starts: Counter[str] = Counter()
    flagged = 0
    asked = questions()
    async with running_server(settings) as s:
        for question in asked:
            r = await s.stub.Cascade(pb.CascadeRequest(query=question))
            starts[r.route.tier.name] += 1
            flagged += pb.REASON_CODE_UNFAMILIAR_QUERY in [x.code for x in r.route.reasons]
    assert len(asked) == 30
    assert starts[tiers[-1]] == 0, starts
    assert starts[tiers[0]] >= 0.8 * len(asked), starts
    assert flagged == len(asked)
