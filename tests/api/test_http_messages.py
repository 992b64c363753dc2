"""The Messages API endpoint through the official `anthropic` SDK, changed only in its base
URL: the real server on port 0 with its replay backend serving recorded answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, post_raw

RECORDS = cascade_records()
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
LOOKUP: Any = {
    "name": "search_docs",
    "description": "Search the documentation.",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
}


def _question(tier: str = "cheap") -> tuple[str, dict[str, Any]]:
    record = labelled(RECORDS, tier)
    return str(record["prompt"]), record


async def test_create_runs_the_cascade_and_names_the_answering_model(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """`model: tierroute` answers with the recorded answer of the tier it chose, named."""
    question, record = _question("cheap")
    message = await messages_client.messages.create(
        model="tierroute", max_tokens=512, messages=[{"role": "user", "content": question}]
    )
    assert message.model == CHEAP
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == record["models"]["flash-model"]["response"]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0
    assert message.usage.input_tokens > 0


async def test_headers_carry_tier_strategy_cost_and_request_id(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """The x-tierroute-* headers say which tier answered, how it was chosen and the cost."""
    question, _ = _question("cheap")
    raw = await messages_client.messages.with_raw_response.create(
        model="tierroute",
        max_tokens=512,
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-tierroute-request-id": "http-headers-1"},
    )
    message = await raw.parse()
    assert raw.headers["x-tierroute-tier"] == "cheap"
    assert raw.headers["x-tierroute-strategy"] == "classifier"
    assert float(raw.headers["x-tierroute-cost-usd"]) > 0
    assert raw.headers["x-tierroute-request-id"] == "http-headers-1"
    assert message.id == "msg_http-headers-1"
    assert message._request_id == "http-headers-1"


async def test_a_concrete_model_goes_straight_to_its_tier(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """A configured tier's model id answers on that tier alone, unjudged and unrouted."""
    question, record = _question("cheap")
    raw = await messages_client.messages.with_raw_response.create(
        model=MID, max_tokens=512, messages=[{"role": "user", "content": question}]
    )
    message = await raw.parse()
    assert message.model == MID
    assert message.content[0].text == record["models"]["pro-model"]["response"]  # type: ignore[union-attr]
    assert raw.headers["x-tierroute-tier"] == "mid"
    assert raw.headers["x-tierroute-strategy"] == "direct"
    assert raw.headers["x-tierroute-judge-status"] == "skipped"


async def test_stream_text_joins_to_the_answer(messages_client: anthropic.AsyncAnthropic) -> None:
    """A streamed create yields the answer's text as deltas and the same final message."""
    question, record = _question("cheap")
    async with messages_client.messages.stream(
        model="tierroute", max_tokens=512, messages=[{"role": "user", "content": question}]
    ) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    answer = record["models"]["flash-model"]["response"]
    # One piece when the answer was judged (held until its verdict), else word by word.
    assert pieces
    assert "".join(pieces) == answer
    assert final.model == CHEAP
    assert final.content[0].text == answer  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


async def test_stream_events_come_in_anthropics_order(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """message_start, one text block's start, deltas and stop, message_delta, message_stop."""
    question, _ = _question("cheap")
    stream = await messages_client.messages.create(
        model="tierroute",
        max_tokens=512,
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_stream_wire_format_is_anthropics(http_served: Running) -> None:
    """On the wire: `event:`/`data:` pairs, a ping after message_start, the extension last."""
    question, _ = _question("cheap")
    body = {
        "model": "tierroute",
        "max_tokens": 512,
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    status, headers, text = await asyncio.to_thread(
        post_raw, http_served.http_url, "/v1/messages", json.dumps(body)
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-tierroute-tier"] == "cheap"
    events = [chunk.split("\n") for chunk in text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    data = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names[:2] == ["message_start", "ping"]
    assert all(d["type"] == name for name, d in zip(names, data, strict=True))
    delta = data[names.index("message_delta")]
    assert delta["tierroute"]["tier"] == "cheap"
    assert delta["tierroute"]["cost_usd"] > 0
    assert data[0]["message"]["model"] == CHEAP


async def test_tool_use_blocks_come_back_and_the_loop_stays_on_its_tier(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """A tool call is a tool_use block; its result in the same session answers on that tier."""
    question, record = _question("cheap")
    session = {"x-tierroute-session-id": "http-agent-1"}
    first = await messages_client.messages.create(
        model="tierroute",
        max_tokens=512,
        tools=[LOOKUP],
        messages=[{"role": "user", "content": question}],
        extra_headers=session,
    )
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "search_docs"
    assert call.input == {"query": question[:200]}
    second = await messages_client.messages.create(
        model="tierroute",
        max_tokens=512,
        tools=[LOOKUP],
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "found"}],
            },
        ],
        extra_headers=session,
    )
    assert second.model == first.model == CHEAP
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == record["models"]["flash-model"]["response"]  # type: ignore[union-attr]


async def test_a_streamed_tool_call_arrives_as_input_json(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """Streamed, the tool call is a tool_use block whose input the SDK assembles."""
    question, _ = _question("cheap")
    async with messages_client.messages.stream(
        model="tierroute",
        max_tokens=512,
        tools=[LOOKUP],
        messages=[{"role": "user", "content": question}],
    ) as stream:
        final = await stream.get_final_message()
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert call.input == {"query": question[:200]}
    assert final.stop_reason == "tool_use"


async def test_models_lists_the_cascade_and_every_tier(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """GET /v1/models lists `tierroute` and each tier's model; one can be fetched by id."""
    page = await messages_client.models.list()
    assert [m.id for m in page.data] == ["tierroute", CHEAP, MID, TOP]
    assert all(m.type == "model" for m in page.data)
    one = await messages_client.models.retrieve(MID)
    assert one.id == MID
    assert "mid" in one.display_name
    with pytest.raises(anthropic.NotFoundError):
        await messages_client.models.retrieve("gpt-nothing")


async def test_an_unjudged_answer_streams_as_it_is_written(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """A concrete model's answer is committed at once, so its text streams in many deltas."""
    question, record = _question("cheap")
    async with messages_client.messages.stream(
        model=CHEAP, max_tokens=512, messages=[{"role": "user", "content": question}]
    ) as stream:
        pieces = [piece async for piece in stream.text_stream]
    assert len(pieces) > 1
    assert "".join(pieces) == record["models"]["flash-model"]["response"]
