"""Upstream streams that break, on both doors that stream: before the Cascade's commit point a
broken stream is a failed call (the Cascade escalates and the caller sees a clean answer from
the next tier, on gRPC, the Messages door and the chat-completions door); after it, the caller
gets an error (Anthropic's `error` event on the Messages door, a gRPC status on CascadeStream;
OpenAI's error chunk is tests/api/test_openai_errors.py), never a clean end of a cut answer.
The replay backend's `midstream` fault cuts its server-sent events halfway with an `error`
event; the real SDKs read both sides over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import grpc
import openai
import pytest
from grpc import aio

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

RECORDS = cascade_records()
# Cheap's answer is right, so the tier above it passes its judge too.
RECORD = labelled(RECORDS, "cheap")
QUESTION = str(RECORD["prompt"])
CHEAP_ANSWER = str(RECORD["models"]["flash-model"]["response"])
MID_ANSWER = str(RECORD["models"]["pro-model"]["response"])
CHEAP, MID = "claude-haiku-4-5", "claude-sonnet-4-6"
BREAK_CHEAP = (("x-tierroute-fault", "midstream@cheap"),)


@pytest.fixture
async def served(replay_data: Path) -> AsyncIterator[Running]:
    """Replay answers at once; every answer below the top is judged; nothing runs ahead."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "1",
            "TIERROUTE_CASCADE_MAX_RETRIES_PER_TIER": "0",
        }
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, environ={}, http=True) as s:
        yield s


@pytest.fixture
async def sdk(served: Running) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official SDK on the Messages door; no retries, so each stream is seen as sent."""
    client = anthropic.AsyncAnthropic(base_url=served.http_url, api_key="any", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def _read(stream: Any, seen: list[Any]) -> None:
    async for event in stream:
        seen.append(event)


def _texts(events: list[pb.CascadeEvent]) -> list[str]:
    return [e.text for e in events if e.WhichOneof("event") == "text"]


# -- gRPC CascadeStream -------------------------------------------------------------------


async def test_cascade_stream_broken_before_its_commit_point_escalates(served: Running) -> None:
    """A held answer's broken stream escalates: one clean answer, no retract, no error."""
    request = pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS)
    events = [e async for e in served.stub.CascadeStream(request, metadata=BREAK_CHEAP)]
    response = events[-1].response
    assert response.tier.name == "mid"
    assert pb.REASON_CODE_PROVIDER_ERROR in [r.code for r in response.escalation_reasons]
    assert not [e for e in events if e.HasField("retract")]
    assert "".join(_texts(events)) == response.answer


async def test_cascade_stream_broken_after_its_commit_point_ends_with_a_status(
    served: Running,
) -> None:
    """Cut committed text ends UNAVAILABLE after a strict prefix, with no response event."""
    request = pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_NEVER)
    call = served.stub.CascadeStream(request, metadata=BREAK_CHEAP)
    events: list[pb.CascadeEvent] = []
    with pytest.raises(aio.AioRpcError) as caught:
        await _read(call, events)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "incomplete" in (caught.value.details() or "")
    received = "".join(_texts(events))
    assert received
    assert CHEAP_ANSWER.startswith(received)
    assert received != CHEAP_ANSWER
    assert not [e for e in events if e.HasField("response")]


# -- the Messages API door ------------------------------------------------------------------


async def test_messages_stream_broken_before_its_commit_point_escalates(
    sdk: anthropic.AsyncAnthropic,
) -> None:
    """A held answer's broken stream escalates: the SDK reads one clean Message from mid."""
    async with sdk.messages.stream(
        model="tierroute",
        max_tokens=256,
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers=dict(BREAK_CHEAP),
    ) as stream:
        message = await stream.get_final_message()
    assert message.model == MID
    assert message.stop_reason == "end_turn"
    assert "".join(b.text for b in message.content if b.type == "text")


async def test_messages_stream_broken_after_its_commit_point_ends_with_an_error_event(
    sdk: anthropic.AsyncAnthropic,
) -> None:
    """A cut committed answer ends with the error event, no message_delta or message_stop."""
    stream = await sdk.messages.create(
        model=CHEAP,
        max_tokens=256,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        extra_headers=dict(BREAK_CHEAP),
    )
    seen: list[Any] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        await _read(stream, seen)
    kinds = [event.type for event in seen]
    assert "content_block_delta" in kinds
    assert "message_delta" not in kinds
    assert "message_stop" not in kinds
    received = "".join(e.delta.text for e in seen if e.type == "content_block_delta")
    assert CHEAP_ANSWER.startswith(received)
    assert received != CHEAP_ANSWER
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert "incomplete" in body["error"]["message"]


# -- the chat-completions door ----------------------------------------------------------------


async def test_chat_stream_broken_before_its_commit_point_escalates(served: Running) -> None:
    """A held answer's broken stream escalates: the OpenAI SDK's stream ends on mid's answer."""
    async with openai.AsyncOpenAI(
        base_url=f"{served.http_url}/v1", api_key="any", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="tierroute",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            extra_headers=dict(BREAK_CHEAP),
        )
        chunks = [chunk async for chunk in stream]
    choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert {chunk.model for chunk in chunks} == {MID}
    assert [c.finish_reason for c in choices if c.finish_reason] == ["stop"]
    assert "".join(c.delta.content or "" for c in choices) == MID_ANSWER
