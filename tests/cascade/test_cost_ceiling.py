"""The per-request cost ceiling (policy.max_cost_usd) over a whole Cascade, through the real
server: each call's worst case is reserved first, a call that could take the request past
the ceiling is not made, and the response names the hop and why."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID = "claude-haiku-4-5", "claude-sonnet-4-6"
EASY = StaticScorer((0.95, 0.03, 0.02))
# Judges may write 300 tokens: a mid judge call's worst case is then about $0.005.
SETTINGS = make_settings({"TIERROUTE_CASCADE_JUDGE_MAX_OUTPUT_TOKENS": "300"})


def judged(ceiling: float) -> pb.CascadeRequest:
    """A cheap-tier answer of at most 200 tokens, judged by mid, under `ceiling`."""
    return pb.CascadeRequest(
        query="What is the capital of France?",
        start_tier="cheap",
        judge_mode=pb.JUDGE_MODE_ALWAYS,
        speculation=pb.SPECULATION_MODE_OFF,
        max_output_tokens=200,
        policy=pb.RoutingPolicy(max_cost_usd=ceiling),
    )


async def test_an_escalation_that_could_pass_the_ceiling_is_not_made() -> None:
    """The judge fails the cheap answer; escalating to mid could pass $0.008 (spent so far
    plus the mid call's worst case), so the mid call is skipped and the cheap answer returns."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon", input_tokens=20, output_tokens=190)]},
        judges={MID: [Reply.verdict(False, ["wrong city"], input_tokens=300, output_tokens=290)]},
    )
    async with running_server(SETTINGS, scorer=EASY, provider=provider) as s:
        response = await s.stub.Cascade(judged(0.008))
    answer, judge, skipped = response.hops
    assert (answer.tier, judge.tier, judge.verdict) == ("cheap", "mid", pb.JUDGE_VERDICT_FAIL)
    assert (skipped.tier, skipped.role, skipped.outcome, skipped.error_kind) == (
        "mid",
        pb.HOP_ROLE_ANSWER,
        pb.HOP_OUTCOME_SKIPPED,
        "cost_ceiling",
    )
    assert "past policy.max_cost_usd $0.008" in skipped.skip_reason
    assert response.answer == "Lyon"
    assert response.judge_status == pb.JUDGE_STATUS_FAILED
    assert "cost_ceiling" in response.degraded_reasons
    assert response.total_cost_usd <= 0.008
    assert provider.calls_to(MID, "answer") == []


async def test_a_judge_that_could_pass_the_ceiling_is_skipped() -> None:
    """Under $0.003 the cheap answer fits but its mid judge's worst case does not: the answer
    comes back unjudged (SKIPPED), never called passed."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with running_server(SETTINGS, scorer=EASY, provider=provider) as s:
        response = await s.stub.Cascade(judged(0.003))
    assert [(h.role, h.outcome) for h in response.hops] == [
        (pb.HOP_ROLE_ANSWER, pb.HOP_OUTCOME_OK),
        (pb.HOP_ROLE_JUDGE, pb.HOP_OUTCOME_SKIPPED),
    ]
    assert response.hops[1].error_kind == "cost_ceiling"
    assert response.judge_status == pb.JUDGE_STATUS_SKIPPED
    assert provider.calls_to(MID) == []


async def test_a_ceiling_below_every_answer_is_failed_precondition() -> None:
    """When not even the first answer's worst case fits, no model is called."""
    provider = ScriptedProvider()
    async with running_server(SETTINGS, scorer=EASY, provider=provider) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(judged(0.0001))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "raise policy.max_cost_usd or lower max_output_tokens" in (err.value.details() or "")
    assert provider.calls == []
