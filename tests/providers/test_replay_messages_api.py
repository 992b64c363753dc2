"""The replay backend's Messages API breadth, through the real SDK over loopback: tool calls
and results, prompt caching, and streaming in Anthropic's server-sent event format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from tests.fixtures import TRIO, make_records
from tierroute.errors import ProviderOverloaded
from tierroute.providers.anthropic import AnthropicProvider
from tierroute.providers.base import AnswerParams, Completion, Message, TextDelta
from tierroute.providers.replay import ReplayServer, ReplayStore
from tierroute.settings import ReplayConfig, TierConfig

TIERS = (
    TierConfig("cheap", "replay-cheap", 1.0, 5.0),
    TierConfig("mid", "replay-mid", 3.0, 15.0),
    TierConfig("top", "replay-top", 15.0, 75.0),
)
CHEAP, MID, TOP = (t.model for t in TIERS)
RECORDS = make_records(12)
PROMPT = str(RECORDS[3]["prompt"])
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
SYSTEM = [
    {
        "type": "text",
        "text": "You are a careful assistant. " * 40,
        "cache_control": {"type": "ephemeral"},
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """A replay server on port 0 answering at once from the fixture records."""
    with ReplayServer(ReplayStore(RECORDS), TIERS, ReplayConfig(time_scale=0.0)) as running:
        yield running


@pytest.fixture
async def provider(server: ReplayServer) -> AsyncIterator[AnthropicProvider]:
    """The real SDK, through AnthropicProvider, pointed at the module's replay server."""
    client = AnthropicProvider(api_key="test-key", base_url=server.base_url)
    yield client
    await client.aclose()


async def ask(
    provider: AnthropicProvider, messages: list[Message], model: str = CHEAP, **params: Any
) -> Completion:
    return await provider.complete(
        model=model,
        messages=messages,
        max_tokens=1024,
        timeout_s=10.0,
        params=AnswerParams(**params),
    )


async def streamed(
    provider: AnthropicProvider, text: str, model: str = CHEAP, **kwargs: Any
) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    final: Completion | None = None
    async for item in provider.stream(
        model=model, messages=[Message("user", text)], max_tokens=1024, timeout_s=10.0, **kwargs
    ):
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            final = item
    assert final is not None
    return deltas, final


async def test_a_request_offering_tools_gets_a_tool_call(provider: AnthropicProvider) -> None:
    """With tools on offer the replayed model calls one, inputs filled from its schema."""
    completion = await ask(provider, [Message("user", PROMPT)], tools=(WEATHER,))
    assert completion.stop_reason == "tool_use"
    (call,) = completion.tool_calls
    assert (call["name"], call["input"]) == ("get_weather", {"city": PROMPT, "days": 1})
    assert completion.text == "I will use get_weather for this."


@pytest.mark.parametrize(
    ("choice", "called"),
    [
        ({"type": "none"}, None),
        ({"type": "any"}, "get_weather"),
        ({"type": "tool", "name": "b"}, "b"),
    ],
)
async def test_tool_choice_decides_the_call(
    provider: AnthropicProvider, choice: dict[str, str], called: str | None
) -> None:
    """none answers in text; any and tool call (the named one) without a preamble."""
    other = {**WEATHER, "name": "b"}
    completion = await ask(
        provider, [Message("user", PROMPT)], tools=(WEATHER, other), tool_choice=choice
    )
    assert [c["name"] for c in completion.tool_calls] == ([called] if called else [])
    if called:
        assert completion.text == ""


async def test_a_tool_result_gets_the_recorded_answer_of_the_question(
    provider: AnthropicProvider,
) -> None:
    """Once the tool's result is back, the recorded answer to the original question follows."""
    first = await ask(provider, [Message("user", PROMPT)], tools=(WEATHER,))
    result = {
        "type": "tool_result",
        "tool_use_id": first.tool_calls[0]["id"],
        "content": [{"type": "text", "text": "sunny"}],
    }
    second = await ask(
        provider,
        [
            Message("user", PROMPT),
            Message("assistant", first.text, first.content),
            Message("user", "sunny", (result,)),
        ],
        tools=(WEATHER,),
    )
    assert second.stop_reason == "end_turn"
    assert second.text == RECORDS[3]["models"][TRIO["cheap"]]["response"]


async def test_a_cached_system_prompt_is_written_then_read(provider: AnthropicProvider) -> None:
    """The first call writes the marked prefix to the cache; the next reads it, per model."""
    first = await ask(provider, [Message("user", "hello one")], system=tuple(SYSTEM))
    second = await ask(provider, [Message("user", "hello two")], system=tuple(SYSTEM))
    other_model = await ask(provider, [Message("user", "hello two")], MID, system=tuple(SYSTEM))
    assert first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens < first.input_tokens + first.cache_creation_input_tokens
    assert other_model.cache_read_input_tokens == 0
    assert other_model.cache_creation_input_tokens == first.cache_creation_input_tokens


async def test_an_unmarked_prompt_uses_no_cache(provider: AnthropicProvider) -> None:
    """Without cache_control nothing is written or read."""
    completion = await ask(provider, [Message("user", "no cache please")])
    assert (completion.cache_creation_input_tokens, completion.cache_read_input_tokens) == (0, 0)


async def test_streamed_deltas_join_to_the_unary_answer(provider: AnthropicProvider) -> None:
    """The SDK's streaming helper reads the replay's events; the text equals the unary reply's."""
    deltas, final = await streamed(provider, PROMPT)
    unary = await ask(provider, [Message("user", PROMPT)])
    assert len(deltas) > 1
    assert "".join(deltas) == final.text == unary.text
    assert (final.input_tokens, final.output_tokens) == (unary.input_tokens, unary.output_tokens)
    assert final.stop_reason == "end_turn"


async def test_a_streamed_tool_call_arrives_whole(provider: AnthropicProvider) -> None:
    """A streamed tool call's input is rebuilt from its input_json_delta."""
    _, final = await streamed(provider, PROMPT, params=AnswerParams(tools=(WEATHER,)))
    assert final.tool_calls[0]["input"] == {"city": PROMPT, "days": 1}


async def test_an_error_inside_the_stream_is_translated(provider: AnthropicProvider) -> None:
    """A midstream fault sends text and then an error event; the provider raises Overloaded."""
    deltas: list[str] = []

    async def read() -> None:
        async for item in provider.stream(
            model=CHEAP,
            messages=[Message("user", PROMPT)],
            max_tokens=1024,
            timeout_s=10.0,
            headers={"x-tierroute-fault": "midstream"},
        ):
            if isinstance(item, TextDelta):
                deltas.append(item.text)

    with pytest.raises(ProviderOverloaded):
        await read()
    assert deltas


async def test_a_unary_call_meets_a_midstream_fault_as_overloaded(
    provider: AnthropicProvider,
) -> None:
    """Without a stream to cut, the midstream fault is the 529 it would carry."""
    with pytest.raises(ProviderOverloaded):
        await provider.complete(
            model=CHEAP,
            messages=[Message("user", PROMPT)],
            max_tokens=64,
            timeout_s=10.0,
            headers={"x-tierroute-fault": "midstream"},
        )


async def test_the_raw_event_sequence_is_anthropics(server: ReplayServer) -> None:
    """message_start, block start, deltas, block stop, message_delta, message_stop, in order."""
    client = anthropic.AsyncAnthropic(api_key="k", base_url=server.base_url, max_retries=0)
    try:
        stream = await client.messages.create(
            model=CHEAP,
            max_tokens=1024,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
        )
        kinds = [event.type async for event in stream]
    finally:
        await client.close()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_leaving_a_stream_early_disconnects_the_replay_call() -> None:
    """A consumer that stops reading frees the server's handler: it counts a disconnect."""
    config = ReplayConfig(time_scale=1.0, ttft_s=(0.0,), tokens_per_s=(40.0,))
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as slow:
        client = AnthropicProvider(api_key="k", base_url=slow.base_url)
        try:
            stream = client.stream(
                model=CHEAP, messages=[Message("user", PROMPT)], max_tokens=1024, timeout_s=30.0
            )
            first = await anext(stream)
            assert isinstance(first, TextDelta)
            await stream.aclose()
            assert await asyncio.to_thread(slow.wait_for, lambda s: s.disconnected == 1, 30.0)
        finally:
            await client.aclose()
