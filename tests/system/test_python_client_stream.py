"""The Python client's streaming and Messages API surface against the real server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from tierroute_client import (
    AsyncTierRouteClient,
    CascadeEvent,
    Final,
    HopFinished,
    HopStarted,
    Retract,
    TextDelta,
    TierRouteClient,
    TierRouteClientError,
    Verdict,
)
from tierroute_client._requests import cascade_request
from tierroute_client.v1 import tierroute_pb2 as client_pb

from tests.helpers import Running, make_settings, running_server
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
EASY = StaticScorer((0.95, 0.03, 0.02))
QUESTION = "What is the capital of France?"


@pytest.fixture
def provider() -> ScriptedProvider:
    """An empty script; each test queues the replies it needs."""
    return ScriptedProvider()


@pytest.fixture
async def served(provider: ScriptedProvider) -> AsyncIterator[Running]:
    """The real server on port 0 over the scripted provider, routing every query cheap."""
    async with running_server(make_settings(), scorer=EASY, provider=provider) as running:
        yield running


def joined(events: list[CascadeEvent]) -> str:
    kept: list[str] = []
    for event in events:
        if isinstance(event, Retract):
            kept.clear()
        elif isinstance(event, TextDelta):
            kept.append(event.text)
    return "".join(kept)


async def test_the_blocking_client_iterates_the_events(
    served: Running, provider: ScriptedProvider
) -> None:
    """`cascade_stream` yields typed events; the deltas join to the final result's answer."""
    provider.script(CHEAP, Reply.answer("Lyon."))
    provider.script(MID, Reply.verdict(False, ["wrong"]), role="judge")
    provider.script(MID, Reply.answer("Paris, the capital."))
    provider.script(TOP, Reply.verdict(True), role="judge")

    def run() -> list[CascadeEvent]:
        with TierRouteClient(f"127.0.0.1:{served.port}") as client:
            return list(client.cascade_stream(QUESTION, judge="always", stream_drafts=True))

    events = await asyncio.to_thread(run)
    assert isinstance(events[0], HopStarted)
    assert any(isinstance(e, HopFinished) and e.hop.tier == "cheap" for e in events)
    verdicts = [e for e in events if isinstance(e, Verdict)]
    assert [(v.answer_tier, v.verdict) for v in verdicts] == [("cheap", "fail"), ("mid", "pass")]
    assert [(e.tier, e.reason) for e in events if isinstance(e, Retract)] == [
        ("cheap", "judge_failed")
    ]
    final = events[-1]
    assert isinstance(final, Final)
    assert joined(events) == final.result.answer == "Paris, the capital."


async def test_breaking_out_of_the_async_stream_cancels_the_calls(
    served: Running, provider: ScriptedProvider
) -> None:
    """Leaving the async iterator early cancels the call and every model call behind it."""
    hold = asyncio.Event()
    provider.script(CHEAP, Reply.answer("Paris is lovely", mid_gate=hold))
    provider.script(MID, Reply.answer("Paris.", gate=hold))
    async with AsyncTierRouteClient(f"127.0.0.1:{served.port}") as client:
        stream = client.cascade_stream(QUESTION, judge="never", speculation=True)
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()
    await provider.wait_settled()
    assert [c.outcome for c in provider.calls] == ["cancelled", "cancelled"]


async def test_a_failed_stream_raises_the_clients_error(served: Running) -> None:
    """Bad input ends the stream with TierRouteClientError carrying INVALID_ARGUMENT."""
    async with AsyncTierRouteClient(f"127.0.0.1:{served.port}") as client:
        with pytest.raises(TierRouteClientError) as err:
            await anext(aiter(client.cascade_stream(QUESTION, top_k=0)))
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert "top_k" in err.value.details


async def test_blocks_tools_and_tool_calls_round_trip(
    served: Running, provider: ScriptedProvider
) -> None:
    """Messages API dicts go in as blocks and tools; a tool call comes back as its dicts."""
    provider.script(CHEAP, Reply.tool_call("lookup", {"q": "cat"}, "Let me look."))
    image = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(b"png-bytes").decode(),
        },
        "cache_control": {"type": "ephemeral"},
    }
    tool = {
        "name": "lookup",
        "description": "Look it up.",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    async with AsyncTierRouteClient(f"127.0.0.1:{served.port}") as client:
        result = await client.cascade(
            messages=[("user", [image, {"type": "text", "text": "What is this?"}])],
            tools=[tool],
            tool_choice="auto",
            temperature=0.3,
            user_id="u-1",
        )
    assert result.judge_status == "tool_use"
    assert result.stop_reason == "tool_use"
    assert result.tool_calls == (
        {"type": "tool_use", "id": "toolu_lookup", "name": "lookup", "input": {"q": "cat"}},
    )
    sent = provider.calls[0]
    assert sent.messages[0].blocks[0]["source"]["data"] == image["source"]["data"]
    assert sent.messages[0].blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert sent.params is not None
    assert sent.params.tools[0]["name"] == "lookup"
    assert (sent.params.temperature, sent.params.user_id) == (pytest.approx(0.3), "u-1")


def test_unset_sampling_options_stay_unset() -> None:
    """Left out, temperature, top_p and top_k are absent from the request, not zero."""
    request = cascade_request("q", {})
    assert not request.HasField("temperature")
    assert not request.HasField("top_k")
    chosen = cascade_request("q", {"temperature": 0.0, "tool_choice": "lookup"})
    assert chosen.HasField("temperature")
    assert chosen.tool_choice == client_pb.ToolChoice(
        type=client_pb.TOOL_CHOICE_TYPE_TOOL, name="lookup"
    )


def test_an_unknown_block_type_names_itself() -> None:
    """A block the contract does not carry is refused before any call, by its type."""
    with pytest.raises(ValueError, match="'thinking'"):
        cascade_request(None, {"messages": [("user", [{"type": "thinking", "thinking": "x"}])]})
