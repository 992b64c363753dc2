"""The OpenAI-compatible door through the official `openai` SDK, changed only in its base
URL: the real server on port 0 with its replay backend serving recorded answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, post_raw, running_server
from tierroute.testing import StaticScorer

RECORDS = cascade_records()
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the documentation.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}


@pytest.fixture
async def client(http_served: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    """The OpenAI SDK pointed at the door; no retries, so each error is seen as sent."""
    sdk = openai.AsyncOpenAI(base_url=f"{http_served.http_url}/v1", api_key="unused", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def _question(tier: str = "cheap") -> tuple[str, dict[str, Any]]:
    record = labelled(RECORDS, tier)
    return str(record["prompt"]), record


async def test_create_runs_the_cascade_and_names_the_answering_model(
    client: openai.AsyncOpenAI,
) -> None:
    """`model: tierroute` answers with the recorded answer of the tier it chose, named."""
    question, record = _question("cheap")
    completion = await client.chat.completions.create(
        model="tierroute", messages=[{"role": "user", "content": question}]
    )
    assert completion.object == "chat.completion"
    assert completion.model == CHEAP
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == record["models"]["flash-model"]["response"]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None


async def test_usage_is_in_openais_shape(client: openai.AsyncOpenAI) -> None:
    """prompt_tokens, completion_tokens and their sum, of the answering call."""
    question, _ = _question("cheap")
    completion = await client.chat.completions.create(
        model=CHEAP, messages=[{"role": "user", "content": question}]
    )
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_headers_carry_tier_strategy_cost_and_request_id(
    client: openai.AsyncOpenAI,
) -> None:
    """The x-tierroute-* headers are those of the Messages door; the id carries the request's."""
    question, _ = _question("cheap")
    raw = await client.chat.completions.with_raw_response.create(
        model="tierroute",
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-tierroute-request-id": "chat-headers-1"},
    )
    completion = raw.parse()
    assert raw.headers["x-tierroute-tier"] == "cheap"
    assert raw.headers["x-tierroute-strategy"] == "classifier"
    assert float(raw.headers["x-tierroute-cost-usd"]) > 0
    assert raw.headers["x-tierroute-judge-status"]
    assert raw.headers["x-tierroute-request-id"] == "chat-headers-1"
    assert completion.id == "chatcmpl-chat-headers-1"


async def test_a_tier_model_id_pins_that_tier(client: openai.AsyncOpenAI) -> None:
    """A configured tier's model id answers on that tier alone, unjudged and unrouted."""
    question, record = _question("cheap")
    raw = await client.chat.completions.with_raw_response.create(
        model=MID, messages=[{"role": "user", "content": question}]
    )
    completion = raw.parse()
    assert completion.model == MID
    assert completion.choices[0].message.content == record["models"]["pro-model"]["response"]
    assert raw.headers["x-tierroute-tier"] == "mid"
    assert raw.headers["x-tierroute-strategy"] == "direct"
    assert raw.headers["x-tierroute-judge-status"] == "skipped"


async def test_the_cascade_escalates_a_question_the_cheap_tier_gets_wrong(
    replay_data: Path,
) -> None:
    """Routed to cheap and judged (every answer is), a wrong answer escalates to a tier that
    gets it right."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "1",
        }
    )
    question, record = _question("expensive")
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, environ={}, http=True) as s:
        sdk = openai.AsyncOpenAI(base_url=f"{s.http_url}/v1", api_key="unused", max_retries=0)
        async with sdk:
            raw = await sdk.chat.completions.with_raw_response.create(
                model="tierroute", messages=[{"role": "user", "content": question}]
            )
    completion = raw.parse()
    tier = raw.headers["x-tierroute-tier"]
    assert tier != "cheap"
    key = {"mid": "pro-model", "expensive": "big-model"}[tier]
    assert completion.choices[0].message.content == record["models"][key]["response"]
    assert completion.model == {"mid": MID, "expensive": TOP}[tier]


async def test_system_and_developer_messages_reach_the_answering_model(
    http_served: Running, client: openai.AsyncOpenAI
) -> None:
    """System and developer messages are the Messages API's system prompt, in order."""
    question, _ = _question("cheap")
    raw = await client.chat.completions.with_raw_response.create(
        model=CHEAP,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": question},
        ],
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-tierroute-tier"] == "cheap"


async def test_a_stream_joins_to_the_answer_and_ends_with_its_finish_reason(
    client: openai.AsyncOpenAI,
) -> None:
    """Streamed chunks carry the role first, the text in pieces, then finish_reason stop."""
    question, record = _question("cheap")
    stream = await client.chat.completions.create(
        model=CHEAP, messages=[{"role": "user", "content": question}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == record["models"]["flash-model"]["response"]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.model == CHEAP and c.object == "chat.completion.chunk" for c in chunks)


async def test_a_stream_with_include_usage_ends_with_a_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    """stream_options.include_usage: a last chunk with no choices carries the usage."""
    question, _ = _question("cheap")
    stream = await client.chat.completions.create(
        model="tierroute",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_stream_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    """Without stream_options every chunk has a choice and none carries usage."""
    question, _ = _question("cheap")
    stream = await client.chat.completions.create(
        model=CHEAP, messages=[{"role": "user", "content": question}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(len(c.choices) == 1 and c.usage is None for c in chunks)


async def test_the_stream_wire_format_is_openais(http_served: Running) -> None:
    """On the wire: unnamed `data:` events, tierroute's object on the last chunk, then [DONE]."""
    question, _ = _question("cheap")
    body = {
        "model": "tierroute",
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    status, headers, text = await asyncio.to_thread(
        post_raw, http_served.http_url, "/v1/chat/completions", json.dumps(body)
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-tierroute-tier"] == "cheap"
    events = text.strip().split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["tierroute"]["tier"] == "cheap"
    assert final["tierroute"]["cost_usd"] > 0


async def test_a_tool_call_comes_back_in_openais_shape_and_the_loop_continues(
    client: openai.AsyncOpenAI,
) -> None:
    """A tool call is a function call with JSON arguments; its tool message gets the answer."""
    question, record = _question("cheap")
    session = {"x-tierroute-session-id": "chat-agent-1"}
    first = await client.chat.completions.create(
        model="tierroute",
        tools=[LOOKUP],
        messages=[{"role": "user", "content": question}],
        extra_headers=session,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "search_docs"
    assert json.loads(call.function.arguments) == {"query": question[:200]}
    second = await client.chat.completions.create(
        model="tierroute",
        tools=[LOOKUP],
        messages=[
            {"role": "user", "content": question},
            choice.message.model_dump(exclude_none=True),  # type: ignore[misc]
            {"role": "tool", "tool_call_id": call.id, "content": "found"},
        ],
        extra_headers=session,
    )
    assert second.model == first.model == CHEAP
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == record["models"]["flash-model"]["response"]


async def test_tool_choice_none_answers_without_calling(client: openai.AsyncOpenAI) -> None:
    """tool_choice "none" is the Messages API's none: the model answers in text."""
    question, _ = _question("cheap")
    completion = await client.chat.completions.create(
        model=CHEAP,
        tools=[LOOKUP],
        tool_choice="none",
        messages=[{"role": "user", "content": question}],
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None


async def test_a_streamed_tool_call_arrives_as_a_tool_call_delta(
    client: openai.AsyncOpenAI,
) -> None:
    """Streamed, the tool call is one tool_calls delta with its id, name and arguments."""
    question, _ = _question("cheap")
    stream = await client.chat.completions.create(
        model="tierroute",
        tools=[LOOKUP],
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    (call,) = calls
    assert call.index == 0
    assert call.function is not None
    assert call.function.name == "search_docs"
    assert json.loads(call.function.arguments or "") == {"query": question[:200]}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_models_lists_the_cascade_and_every_tier_in_openais_shape(
    client: openai.AsyncOpenAI,
) -> None:
    """Without anthropic-version, GET /v1/models is OpenAI's list; one model by id too."""
    page = await client.models.list()
    assert [m.id for m in page.data] == ["tierroute", CHEAP, MID, TOP]
    assert all(m.object == "model" and m.owned_by == "tierroute" for m in page.data)
    one = await client.models.retrieve(MID)
    assert one.id == MID
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-nothing")
