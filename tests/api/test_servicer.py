"""The servicer through the real server and a real channel: each RPC translated to the core
and back, the caller's deadline and fault headers passed down, system turns sent on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, running_server
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.providers.replay.faults import FAULT_HEADER
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import open_store
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

RECORDS = cascade_records()
EASY = StaticScorer((0.95, 0.03, 0.02))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"


async def test_cheap_answer_passes_its_judge(served: Running) -> None:
    """A query the cheap tier answers right is answered there and passes the mid judge."""
    record = labelled(RECORDS, "cheap")
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert r.tier.name == "cheap"
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert [(h.tier, h.role) for h in r.hops] == [
        ("cheap", pb.HOP_ROLE_ANSWER),
        ("mid", pb.HOP_ROLE_JUDGE),
    ]
    assert r.answer == RECORDS[RECORDS.index(record)]["models"]["flash-model"]["response"]
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))
    assert r.route.tier.name == "cheap"


async def test_hard_query_escalates_twice(served: Running) -> None:
    """A query only the top tier answers right escalates cheap -> mid -> expensive."""
    record = next(r for r in RECORDS if r["min_tier_correct"] == "expensive")
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert r.tier.name == "expensive"
    assert r.escalated
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_JUDGE_FAILED] * 2
    assert r.judge_status == pb.JUDGE_STATUS_NOT_REQUIRED


async def test_fault_metadata_reaches_the_replay_backend(served: Running) -> None:
    """A 529 injected on the cheap tier through call metadata falls over to mid."""
    r = await served.stub.Cascade(
        pb.CascadeRequest(
            query=str(labelled(RECORDS, "cheap")["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER
        ),
        metadata=(("x-tierroute-fault", "529@cheap"),),
    )
    assert r.tier.name == "mid"
    assert r.hops[0].outcome == pb.HOP_OUTCOME_ERROR
    assert r.hops[0].error_kind == "overloaded"
    assert r.degraded
    assert r.escalation_reasons[0].code == pb.REASON_CODE_PROVIDER_ERROR


async def test_sampled_out_answer_is_not_called_passed(served: Running) -> None:
    """With judging off the cheap answer comes back SAMPLED_OUT, not PASSED."""
    r = await served.stub.Cascade(
        pb.CascadeRequest(
            query=str(labelled(RECORDS, "mid")["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER
        )
    )
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT
    assert [h.role for h in r.hops] == [pb.HOP_ROLE_ANSWER]


async def test_unknown_prompt_gets_a_synthetic_answer(served: Running) -> None:
    """A prompt the replay data does not know still gets a deterministic answer."""
    request = pb.CascadeRequest(query="Tell me about otters.", judge_mode=pb.JUDGE_MODE_NEVER)
    first = await served.stub.Cascade(request)
    second = await served.stub.Cascade(request)
    assert first.answer
    assert first.answer == second.answer


async def test_server_deadline_cap_gives_deadline_exceeded(replay_data: Path) -> None:
    """When the server's deadline cap passes first, the caller gets DEADLINE_EXCEEDED."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "1",
            "TIERROUTE_CASCADE_MAX_DEADLINE_S": "0.05",
        }
    )
    async with running_server(settings, scorer=EASY, environ={}) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(
                pb.CascadeRequest(query=str(labelled(RECORDS, "cheap")["prompt"])), timeout=30
            )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_cancellation_cancels_provider_calls(replay_data: Path) -> None:
    """A client that cancels its call makes the server drop the provider call in flight."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "100"}
    )
    async with running_server(settings, scorer=EASY, environ={}) as s:
        backend = s.server.backend
        assert backend is not None
        assert backend.replay is not None
        replay = backend.replay
        call = s.stub.Cascade(pb.CascadeRequest(query=str(labelled(RECORDS, "cheap")["prompt"])))
        started = await asyncio.to_thread(replay.wait_for, lambda st: st.in_flight >= 1, 30)
        assert started
        call.cancel()
        dropped = await asyncio.to_thread(replay.wait_for, lambda st: st.disconnected >= 1, 30)
        assert dropped
        assert replay.stats().in_flight == 0 or await asyncio.to_thread(
            replay.wait_for, lambda st: st.in_flight == 0, 30
        )


async def test_system_messages_reach_every_answer_call() -> None:
    """ROLE_SYSTEM messages are sent as the system instruction of the answer calls."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("quatre")]})
    async with running_server(scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(
                messages=[
                    pb.ChatMessage(role=pb.ROLE_SYSTEM, content="Always answer in French."),
                    pb.ChatMessage(role=pb.ROLE_USER, content="What is 2+2?"),
                ],
                judge_mode=pb.JUDGE_MODE_NEVER,
            )
        )
    (call,) = provider.calls
    assert call.system == "Always answer in French."


async def test_answer_in_hand_reaches_a_caller_whose_deadline_cuts_the_judge() -> None:
    """A judge still running at the caller's deadline does not cost the caller the answer."""
    hung = asyncio.Event()  # never set: the judge call never returns
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("4")]},
        judges={MID: [Reply(gate=hung, text="", tool_input={"passes": True, "issues": []})]},
    )
    async with running_server(scorer=EASY, provider=provider) as s:
        r = await s.stub.Cascade(
            pb.CascadeRequest(query="What is 2+2?", judge_mode=pb.JUDGE_MODE_ALWAYS),
            timeout=2,
        )
    assert r.answer == "4"
    assert r.degraded
    assert r.judge_status != pb.JUDGE_STATUS_PASSED


async def test_fault_headers_reach_the_provider_only_when_the_server_forwards_them() -> None:
    """With forwarding on, the fault header reaches every call and other metadata does not."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("4")]})
    async with running_server(scorer=EASY, provider=provider, forward_fault_headers=True) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(query="What is 2+2?", judge_mode=pb.JUDGE_MODE_NEVER),
            metadata=((FAULT_HEADER, "529@mid"), ("x-caller-note", "kept out")),
        )
    (call,) = provider.calls
    assert call.headers == {FAULT_HEADER: "529@mid"}


async def test_an_injected_provider_gets_no_fault_headers_by_default() -> None:
    """A server not told to forward fault headers sends its provider none of the caller's."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("4")]})
    async with running_server(scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(query="What is 2+2?", judge_mode=pb.JUDGE_MODE_NEVER),
            metadata=((FAULT_HEADER, "529@cheap"),),
        )
    (call,) = provider.calls
    assert FAULT_HEADER not in call.headers


async def test_a_call_naming_no_tenant_is_the_tokens_tenants(tmp_path: Path) -> None:
    """With authentication on, a call that names no tenant is logged under its token's tenant."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {"acme": [hash_token("acme-t")]}}))
    settings = make_settings(
        {
            "TIERROUTE_AUTH_TOKENS_FILE": str(tokens),
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    async with running_server(settings, scorer=EASY) as s:
        await s.stub.Route(
            pb.RouteRequest(query="What is 2+2?"), metadata=bearer_metadata("acme-t")
        )
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        (record,) = await store.fetch_queries()
    finally:
        await store.aclose()
    assert record.tenant_id == "acme"
