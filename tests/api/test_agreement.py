"""The Cascade's agreement modes through the real server: a probe cross-checks the cheap
answer, the mid tier settles a disagreement, and every call (the probe's too) is billed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from tests.helpers import make_settings, running_server
from tierroute.errors import ProviderOverloaded
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import open_store
from tierroute.routing import AGREEMENT_ACTIONS, plan_from
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

# The router would start on mid: the agreement rules start on the cheapest tier anyway.
MID_START = StaticScorer((0.1, 0.8, 0.1))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
PROBE = "claude-3-haiku-20240307"
QUESTION = "Which option is right? Options: A. one B. two C. three"
RULE_A = pb.JUDGE_MODE_AGREEMENT
RULE_B = pb.JUDGE_MODE_AGREEMENT_MID


def said(letter: str) -> Reply:
    return Reply.answer(f"Working it out step by step. The answer is ({letter}).")


def request(mode: pb.JudgeMode.ValueType) -> pb.CascadeRequest:
    return pb.CascadeRequest(query=QUESTION, judge_mode=mode, speculation=pb.SPECULATION_MODE_OFF)


def roles(response: pb.CascadeResponse) -> list[tuple[str, int]]:
    return sorted((h.tier, h.role) for h in response.hops)


async def test_agreeing_probe_ships_the_cheap_answer() -> None:
    """Cheap and probe agree: the cheap answer ships AGREED, and the probe's call is billed
    at the probe's configured prices in the total."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [said("B")],
            PROBE: [Reply.answer("So the answer is B.", input_tokens=400, output_tokens=200)],
        }
    )
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    assert r.tier.name == "cheap"
    assert r.judge_status == pb.JUDGE_STATUS_AGREED
    assert roles(r) == [("cheap", pb.HOP_ROLE_ANSWER), ("probe", pb.HOP_ROLE_PROBE)]
    (probe,) = [h for h in r.hops if h.role == pb.HOP_ROLE_PROBE]
    assert probe.model == PROBE
    assert probe.cost_usd == pytest.approx((400 * 0.25 + 200 * 1.25) / 1e6)
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))
    assert not provider.calls_to(MID)
    assert not provider.calls_to(TOP)


async def test_mid_agreeing_with_the_probe_ships_mid() -> None:
    """Cheap and probe disagree; mid agrees with the probe: mid ships AGREED, no top call."""
    provider = ScriptedProvider(answers={CHEAP: [said("A")], PROBE: [said("C")], MID: [said("C")]})
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    assert r.tier.name == "mid"
    assert r.judge_status == pb.JUDGE_STATUS_AGREED
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_ANSWERS_DISAGREE]
    assert not provider.calls_to(TOP)


async def test_mid_agreeing_with_cheap_ships_mid() -> None:
    """Mid may agree with the cheap answer instead of the probe's: it ships AGREED."""
    provider = ScriptedProvider(answers={CHEAP: [said("A")], PROBE: [said("C")], MID: [said("A")]})
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    assert (r.tier.name, r.judge_status) == ("mid", pb.JUDGE_STATUS_AGREED)


async def test_three_different_answers_go_to_the_top() -> None:
    """Cheap, probe and mid all differ: the top tier's answer ships, two disagreements."""
    provider = ScriptedProvider(
        answers={CHEAP: [said("A")], PROBE: [said("B")], MID: [said("C")], TOP: [said("D")]}
    )
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    assert r.tier.name == "expensive"
    assert r.judge_status == pb.JUDGE_STATUS_NOT_REQUIRED
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_ANSWERS_DISAGREE] * 2
    assert len(r.hops) == 4
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))


async def test_rule_b_ships_mid_unchecked_on_a_disagreement() -> None:
    """AGREEMENT_MID: cheap and probe disagree, so mid's answer ships unchecked (SKIPPED)."""
    provider = ScriptedProvider(answers={CHEAP: [said("A")], PROBE: [said("C")], MID: [said("D")]})
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_B))
    assert (r.tier.name, r.judge_status) == ("mid", pb.JUDGE_STATUS_SKIPPED)
    assert not provider.calls_to(TOP)


async def test_two_answers_without_a_final_answer_do_not_agree() -> None:
    """Neither cheap nor probe states a final answer: that is no agreement, so mid answers."""
    prose = "It depends on how one reads the options."
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(prose)], PROBE: [Reply.answer(prose)], MID: [said("B")]}
    )
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_B))
    assert r.tier.name == "mid"
    assert "states no final answer" in r.escalation_reasons[0].detail


async def test_failed_probe_escalates_degraded() -> None:
    """A probe that fails gives nothing to agree with: the cascade escalates, degraded."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [said("B")],
            PROBE: [Reply.fail(ProviderOverloaded("HTTP 529"))],
            MID: [said("B")],
        }
    )
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    assert (r.tier.name, r.judge_status) == ("mid", pb.JUDGE_STATUS_AGREED)
    assert "probe_unavailable:probe" in r.degraded_reasons


async def test_agreement_without_a_probe_is_invalid() -> None:
    """With no [[probes]] configured an agreement mode is INVALID_ARGUMENT, saying why."""
    settings = dataclasses.replace(make_settings(), probes=())
    async with running_server(settings, scorer=MID_START, provider=ScriptedProvider()) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.stub.Cascade(request(RULE_A))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "[[probes]]" in (caught.value.details() or "")


async def test_query_log_records_the_probe_hop(tmp_path: Path) -> None:
    """The query log holds the probe's hop with its cost, in the cascade's total."""
    db = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": db,
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    provider = ScriptedProvider(answers={CHEAP: [said("B")], PROBE: [said("B")]})
    async with running_server(settings, scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(request(RULE_A))
    store = open_store(db)
    try:
        (record,) = await store.fetch_queries()
    finally:
        await store.aclose()
    probe_hops = [h for h in record.hops if h["role"] == "probe"]
    assert [h["tier"] for h in probe_hops] == ["probe"]
    assert probe_hops[0]["cost_usd"] == pytest.approx(
        next(h.cost_usd for h in r.hops if h.role == pb.HOP_ROLE_PROBE)
    )
    assert record.total_cost_usd == pytest.approx(r.total_cost_usd)


async def test_value_plan_choosing_agree_runs_rule_a() -> None:
    """A value plan whose action is `agree` runs rule A with the default judge mode."""
    plan = plan_from((0.9, 0.2), (0.001, 0.0012), 0.01, AGREEMENT_ACTIONS)
    scorer = StaticScorer((0.95, 0.03, 0.02), plan=plan)
    provider = ScriptedProvider(answers={CHEAP: [said("A")], PROBE: [said("C")], MID: [said("C")]})
    async with running_server(scorer=scorer, provider=provider) as s:
        r = await s.stub.Cascade(
            pb.CascadeRequest(query=QUESTION, speculation=pb.SPECULATION_MODE_OFF)
        )
    assert plan.judge == "agree"
    assert (r.tier.name, r.judge_status) == ("mid", pb.JUDGE_STATUS_AGREED)
    assert any(h.role == pb.HOP_ROLE_PROBE for h in r.hops)
    assert r.route.reasons[0].code == pb.REASON_CODE_EXPECTED_VALUE


async def test_the_cost_ceiling_counts_the_probe() -> None:
    """Under a ceiling that fits the cheap answer's worst case but not the probe's too, the
    probe is not called: its hop is skipped for the ceiling and the answer is degraded."""
    provider = ScriptedProvider(answers={CHEAP: [said("B")], PROBE: [said("B")]})
    query = pb.CascadeRequest(
        query=QUESTION,
        judge_mode=RULE_A,
        speculation=pb.SPECULATION_MODE_OFF,
        max_output_tokens=200,
        policy=pb.RoutingPolicy(max_cost_usd=0.00105),
    )
    async with running_server(scorer=MID_START, provider=provider) as s:
        r = await s.stub.Cascade(query)
    (probe,) = [h for h in r.hops if h.role == pb.HOP_ROLE_PROBE]
    assert (probe.outcome, probe.error_kind) == (pb.HOP_OUTCOME_SKIPPED, "cost_ceiling")
    assert not provider.calls_to(PROBE)
    assert r.judge_status != pb.JUDGE_STATUS_AGREED
    assert r.total_cost_usd <= 0.00105
