"""CascadeStream end to end: the real server, its replay backend streaming Anthropic's
server-sent events over loopback, and the real SDK reading them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, running_server
from tierroute.providers.replay import ReplayServer
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

RECORDS = cascade_records()


def texts(events: list[pb.CascadeEvent]) -> list[str]:
    return [e.text for e in events if e.WhichOneof("event") == "text"]


def replay_of(running: Running) -> ReplayServer:
    backend = running.server.backend
    assert backend is not None
    assert backend.replay is not None
    return backend.replay


@pytest.fixture
async def slow(replay_data: Path) -> AsyncIterator[Running]:
    """A server whose replay backend streams in real time, 20 tokens a second."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "1",
            "TIERROUTE_REPLAY_TTFT_S": "0",
            "TIERROUTE_REPLAY_TOKENS_PER_S": "20",
        }
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, environ={}) as running:
        yield running


async def test_streamed_deltas_join_to_the_recorded_answer(served: Running) -> None:
    """An unjudged answer arrives as many deltas that join to the recorded response."""
    record = labelled(RECORDS, "cheap")
    events = [
        e
        async for e in served.stub.CascadeStream(
            pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER)
        )
    ]
    response = events[-1].response
    assert len(texts(events)) > 1
    assert "".join(texts(events)) == response.answer
    assert response.answer == record["models"]["flash-model"]["response"]


async def test_a_stream_and_a_unary_call_agree(served: Running) -> None:
    """The stream's last event is the response Cascade gives: same answer, tiers and tokens."""
    record = next(r for r in RECORDS if r["min_tier_correct"] == "expensive")
    request = pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_ALWAYS)
    unary = await served.stub.Cascade(request)
    events = [e async for e in served.stub.CascadeStream(request)]
    streamed = events[-1].response
    assert streamed.answer == unary.answer == "".join(texts(events))
    assert [(h.tier, h.role, h.input_tokens, h.output_tokens) for h in streamed.hops] == [
        (h.tier, h.role, h.input_tokens, h.output_tokens) for h in unary.hops
    ]
    assert streamed.total_cost_usd == pytest.approx(unary.total_cost_usd)
    assert [e.verdict.verdict for e in events if e.HasField("verdict")] == [
        pb.JUDGE_VERDICT_FAIL,
        pb.JUDGE_VERDICT_FAIL,
    ]


async def test_a_midstream_error_with_drafts_escalates_after_a_retract(served: Running) -> None:
    """The cheap stream breaks after HTTP 200: its draft is retracted and mid answers."""
    record = labelled(RECORDS, "cheap")
    call = served.stub.CascadeStream(
        pb.CascadeRequest(
            query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER, stream_drafts=True
        ),
        metadata=(("x-tierroute-fault", "midstream@cheap"),),
    )
    events = [e async for e in call]
    retracts = [e.retract for e in events if e.HasField("retract")]
    assert [(r.tier, r.reason) for r in retracts] == [("cheap", "provider_error")]
    response = events[-1].response
    assert response.tier.name == "mid"
    assert pb.REASON_CODE_PROVIDER_ERROR in [r.code for r in response.escalation_reasons]


async def test_a_midstream_error_without_drafts_is_unavailable(served: Running) -> None:
    """Committed text that breaks off ends the stream UNAVAILABLE rather than be replaced."""
    record = labelled(RECORDS, "cheap")
    call = served.stub.CascadeStream(
        pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER),
        metadata=(("x-tierroute-fault", "midstream@cheap"),),
    )
    with pytest.raises(aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_cancelling_mid_stream_releases_every_replay_call(slow: Running) -> None:
    """A cancel after the first delta disconnects both the streaming and the speculative call."""
    replay = replay_of(slow)
    record = labelled(RECORDS, "cheap")
    call = slow.stub.CascadeStream(
        pb.CascadeRequest(
            query=str(record["prompt"]),
            judge_mode=pb.JUDGE_MODE_NEVER,
            speculation=pb.SPECULATION_MODE_ON,
        )
    )
    async for event in call:
        if event.WhichOneof("event") == "text":
            break
    assert await asyncio.to_thread(replay.wait_for, lambda s: s.in_flight == 2, 30.0)
    call.cancel()
    assert await asyncio.to_thread(
        replay.wait_for, lambda s: s.in_flight == 0 and s.disconnected == 2, 30.0
    )
