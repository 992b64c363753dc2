"""routing.on_unfamiliar's default plan end to end: the real server, its replay backend on
loopback serving recorded answers, the real Anthropic SDK. An unfamiliar query starts on the
cheapest tier, its answer is checked (the probe's agreement, else mid's judge), and doubt
goes straight to the reference tier."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import TRIO, make_record, write_dataset
from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

PROBE_KEY = "deepseek"  # the bundled probe's first replay model
# What each recorded model answered: cheap, mid, top, probe (None: no final answer).
CASES: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "agree": ("A", "B", "A", "A"),
    "disagree": ("A", "B", "C", "D"),
    "open": (None, "A", "A", None),
    "open_wrong": (None, None, "A", None),
}


def question(case: str) -> str:
    return f"Case {case}: how do I reverse a list in the language of case {case}?"


def case_record(index: int, case: str) -> dict[str, Any]:
    record = make_record(index, random.Random(index))
    record["id"] = f"toy_dev/{case}"
    record["prompt"] = question(case)
    keys = [*TRIO.values(), PROBE_KEY]
    record["models"][PROBE_KEY] = dict(record["models"][TRIO["cheap"]])
    for key, pred in zip(keys, CASES[case], strict=True):
        entry = record["models"][key]
        entry["canonical_model"] = key
        # An open answer states no final answer; the replay judge still knows what it meant.
        entry["pred"] = pred if pred is not None else "A" if key == TRIO["cheap"] else None
        entry["response"] = (
            f"Reasoning by {key}. The answer is ({pred})."
            if pred is not None
            else f"Use slicing, {key} says: items[::-1] gives a reversed copy."
        )
    return record


@pytest.fixture(scope="module")
def case_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One recorded question per case, with the probe's recorded answer."""
    path = tmp_path_factory.mktemp("unfamiliar") / "cases.jsonl.gz"
    return write_dataset(path, [case_record(i, case) for i, case in enumerate(CASES)])


@pytest.fixture
async def served(case_data: Path) -> AsyncIterator[Running]:
    """The server on the replay backend; every query below the familiarity threshold, and
    the classifier sure the top tier is needed (what it says of text it does not know)."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(case_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0",
        }
    )
    scorer = StaticScorer((0.02, 0.08, 0.9), familiarity=0.01, familiarity_threshold=0.3)
    async with running_server(settings, scorer=scorer, environ={}) as s:
        yield s


async def ask(served: Running, case: str) -> pb.CascadeResponse:
    request = pb.CascadeRequest(query=question(case))
    response: pb.CascadeResponse = await served.stub.Cascade(request)
    return response


def answered_by(response: pb.CascadeResponse) -> list[str]:
    return [h.tier for h in response.hops if h.role == pb.HOP_ROLE_ANSWER]


async def test_the_probe_agreeing_ships_the_cheap_answer(served: Running) -> None:
    """Cheap and the probe both answer (A): cheap ships AGREED, nothing above it is asked."""
    r = await ask(served, "agree")
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_AGREED)
    assert [h.role for h in r.hops] == [pb.HOP_ROLE_ANSWER, pb.HOP_ROLE_PROBE]
    assert r.route.reasons[0].code == pb.REASON_CODE_UNFAMILIAR_QUERY


async def test_a_disagreement_goes_straight_to_the_reference_tier(served: Running) -> None:
    """Cheap (A) and the probe (D) disagree: the top tier, the default reference, answers;
    mid is never asked."""
    r = await ask(served, "disagree")
    assert (r.tier.name, r.judge_status) == ("expensive", pb.JUDGE_STATUS_NOT_REQUIRED)
    assert answered_by(r) == ["cheap", "expensive"]
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_ANSWERS_DISAGREE]
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))


async def test_an_open_answer_mid_passes_ships_cheap(served: Running) -> None:
    """A cheap answer with no final answer is judged by mid, whose own answer agrees: it
    ships PASSED."""
    r = await ask(served, "open")
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_PASSED)
    assert [h.tier for h in r.hops if h.role == pb.HOP_ROLE_JUDGE] == ["mid"]


async def test_an_open_answer_mid_cannot_grade_goes_to_the_reference_tier(
    served: Running,
) -> None:
    """Mid reaches no answer of its own, so its verdict is unavailable: never a pass, the
    reference tier answers."""
    r = await ask(served, "open_wrong")
    assert r.tier.name == "expensive"
    assert answered_by(r) == ["cheap", "expensive"]
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_JUDGE_UNAVAILABLE]
