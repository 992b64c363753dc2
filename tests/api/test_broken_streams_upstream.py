"""An upstream whose stream ends early without saying so: after HTTP 200 and some text it
stops, either closing its chunked body properly but with no `message_stop`, or dropping the
connection mid-body. Either way the committed answer is cut, so the caller gets an error
(Anthropic's `error` event on the Messages door, UNAVAILABLE on CascadeStream), never a clean
end; one that breaks before any of its text went out is retried like any failed call. The
upstream is a real HTTP server on loopback speaking the Messages API's events; the real
Anthropic SDK reads it inside tierroute and the real SDK and gRPC stub call tierroute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import grpc
import pytest
from grpc import aio

from tests.helpers import Running, make_settings, running_server
from tierroute.providers.anthropic import AnthropicProvider
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP = "claude-haiku-4-5"
PIECES = ("The answer ", "is ", "forty")


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _closing() -> bytes:
    out = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    out += _event(
        "message_delta",
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 3}},
    )
    return out + _event("message_stop", {"type": "message_stop"})


def _opening() -> bytes:
    message = {
        "id": "msg_cut",
        "type": "message",
        "role": "assistant",
        "model": CHEAP,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    out = _event("message_start", {"type": "message_start", "message": message})
    out += _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for piece in PIECES:
        delta = {"type": "text_delta", "text": piece}
        out += _event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    return out


class CuttingUpstream:
    """A Messages API upstream that streams the first words of an answer, then stops:
    `clean` ends the chunked body properly (no `message_stop`), else the connection drops.
    With `cut_before_text` it cuts its first answer before any text and streams every later
    one whole; with `drop_after_stop` it streams each answer whole and then drops the
    connection without ending the chunked body."""

    def __init__(
        self, *, clean: bool, cut_before_text: bool = False, drop_after_stop: bool = False
    ) -> None:
        self.clean = clean
        self.cut_before_text = cut_before_text
        self.drop_after_stop = drop_after_stop
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            self.requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            body = _opening()
            if self.cut_before_text and self.requests == 1:
                body = body[: body.index(b"event: content_block_start")]
            elif self.cut_before_text or self.drop_after_stop:
                body += _closing()
            whole = self.cut_before_text and self.requests > 1
            writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            if self.clean or whole:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


async def _serving(upstream: str, retries: int = 0) -> AsyncIterator[Running]:
    settings = make_settings(
        {
            "TIERROUTE_CASCADE_MAX_RETRIES_PER_TIER": str(retries),
            "TIERROUTE_CASCADE_RETRY_BASE_DELAY_S": "0.01",
            "TIERROUTE_CASCADE_RETRY_MAX_DELAY_S": "0.01",
        }
    )
    provider = AnthropicProvider(api_key="upstream-key", base_url=upstream)
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, provider=provider, http=True) as s:
        yield s


@pytest.fixture(params=[True, False], ids=["ends-without-message_stop", "drops-the-connection"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Running, CuttingUpstream]]:
    """tierroute in front of an upstream that cuts each answer one of the two ways."""
    upstream = CuttingUpstream(clean=request.param)
    async with upstream as url:
        async for running in _serving(url):
            yield running, upstream


async def _read(stream: Any, seen: list[Any]) -> None:
    async for event in stream:
        seen.append(event)


async def test_the_messages_door_ends_a_cut_answer_with_an_error_event(
    served: tuple[Running, CuttingUpstream],
) -> None:
    """The words that came, then the error event the SDK raises on; no message_stop."""
    running, upstream = served
    client = anthropic.AsyncAnthropic(base_url=running.http_url, api_key="any", max_retries=0)
    seen: list[Any] = []
    try:
        stream = await client.messages.create(
            model=CHEAP,
            max_tokens=64,
            messages=[{"role": "user", "content": "What is six times seven?"}],
            stream=True,
        )
        with pytest.raises(anthropic.APIStatusError) as caught:
            await _read(stream, seen)
    finally:
        await client.close()
    received = "".join(e.delta.text for e in seen if e.type == "content_block_delta")
    assert received == "".join(PIECES)
    assert "message_stop" not in [e.type for e in seen]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert upstream.requests == 1


async def test_cascade_stream_ends_a_cut_answer_unavailable(
    served: tuple[Running, CuttingUpstream],
) -> None:
    """CascadeStream sends the words that came, then ends UNAVAILABLE without a response."""
    running, _ = served
    request = pb.CascadeRequest(
        query="What is six times seven?", start_tier="cheap", judge_mode=pb.JUDGE_MODE_NEVER
    )
    seen: list[pb.CascadeEvent] = []
    with pytest.raises(aio.AioRpcError) as caught:
        await _read(running.stub.CascadeStream(request), seen)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(e.text for e in seen if e.WhichOneof("event") == "text") == "".join(PIECES)
    assert not [e for e in seen if e.HasField("response")]


@pytest.fixture(params=[True, False], ids=["ends-without-message_stop", "drops-the-connection"])
async def retrying(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Running, CuttingUpstream]]:
    """tierroute, one retry per tier, before an upstream whose first answer breaks before any
    of its text and whose next answers are whole."""
    upstream = CuttingUpstream(clean=request.param, cut_before_text=True)
    async with upstream as url:
        async for running in _serving(url, retries=1):
            yield running, upstream


async def test_a_stream_broken_before_any_text_is_retried_as_a_failed_call(
    retrying: tuple[Running, CuttingUpstream],
) -> None:
    """A top-tier answer broken before any text is retried; the caller reads one whole answer."""
    running, upstream = retrying
    request = pb.CascadeRequest(
        query="What is six times seven?", start_tier="expensive", judge_mode=pb.JUDGE_MODE_NEVER
    )
    seen: list[pb.CascadeEvent] = []
    await _read(running.stub.CascadeStream(request), seen)
    response = seen[-1].response
    assert response.answer == "".join(PIECES)
    assert "".join(e.text for e in seen if e.WhichOneof("event") == "text") == response.answer
    assert upstream.requests == 2


async def test_a_connection_dropped_after_message_stop_loses_nothing() -> None:
    """A connection dropped after message_stop loses nothing: the whole answer, no error."""
    upstream = CuttingUpstream(clean=False, drop_after_stop=True)
    async with upstream as url:
        async for running in _serving(url):
            request = pb.CascadeRequest(
                query="What is six times seven?", start_tier="cheap", judge_mode=pb.JUDGE_MODE_NEVER
            )
            seen: list[pb.CascadeEvent] = []
            await _read(running.stub.CascadeStream(request), seen)
    assert seen[-1].response.answer == "".join(PIECES)
    assert upstream.requests == 1
