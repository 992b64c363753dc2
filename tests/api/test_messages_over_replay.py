"""The Messages API surface end to end: the real server, its replay backend over loopback
and the real SDK between them; a tool loop round-trips and cache tokens are priced."""

from __future__ import annotations

import json

import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings
from tierroute.v1 import tierroute_pb2 as pb

RECORDS = cascade_records()
TIERS = make_settings().tiers
LOOKUP = pb.Tool(
    name="search_docs",
    description="Search the documentation.",
    input_schema_json=json.dumps(
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    ),
)
CACHED_SYSTEM = pb.ChatMessage(
    role=pb.ROLE_SYSTEM,
    blocks=[
        pb.ContentBlock(
            text=pb.TextBlock(text="Answer as a careful expert. " * 60),
            cache_control=pb.CacheControl(),
        )
    ],
)


async def test_a_tool_loop_round_trips_through_the_replay_backend(served: Running) -> None:
    """Turn one calls the tool; its result, in the same session, gets the recorded answer."""
    record = labelled(RECORDS, "cheap")
    question = str(record["prompt"])
    first = await served.stub.Cascade(
        pb.CascadeRequest(query=question, tools=[LOOKUP], session_id="agent-1")
    )
    assert first.judge_status == pb.JUDGE_STATUS_TOOL_USE
    call = next(b.tool_use for b in first.content if b.WhichOneof("block") == "tool_use")
    assert json.loads(call.input_json) == {"query": question[:200]}
    result = pb.ContentBlock(
        tool_result=pb.ToolResultBlock(
            tool_use_id=call.id, content=[pb.ContentBlock(text=pb.TextBlock(text="found it"))]
        )
    )
    second = await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[
                pb.ChatMessage(role=pb.ROLE_USER, content=question),
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, blocks=list(first.content)),
                pb.ChatMessage(role=pb.ROLE_USER, blocks=[result]),
            ],
            tools=[LOOKUP],
            session_id="agent-1",
            judge_mode=pb.JUDGE_MODE_ALWAYS,
        )
    )
    assert second.tier.name == first.tier.name == "cheap"
    assert second.stop_reason == "end_turn"
    assert second.answer == record["models"]["flash-model"]["response"]
    assert second.judge_status == pb.JUDGE_STATUS_PASSED
    assert [b.WhichOneof("block") for b in second.content] == ["text"]


def _priced(hop: pb.Hop, index: int) -> float:
    tier = TIERS[index]
    return tier.cost_usd(
        hop.input_tokens,
        hop.output_tokens,
        hop.cache_creation_input_tokens,
        hop.cache_read_input_tokens,
    )


async def test_cache_writes_and_reads_are_priced_by_the_tier(served: Running) -> None:
    """A cached system prompt is written once and read after; each hop's cost prices both."""
    responses = []
    for question in ("first question about caching", "second question about caching"):
        responses.append(
            await served.stub.Cascade(
                pb.CascadeRequest(
                    messages=[CACHED_SYSTEM, pb.ChatMessage(role=pb.ROLE_USER, content=question)],
                    judge_mode=pb.JUDGE_MODE_NEVER,
                )
            )
        )
    write, read = (r.hops[0] for r in responses)
    assert write.cache_creation_input_tokens > 0
    assert write.cache_read_input_tokens == 0
    assert read.cache_read_input_tokens == write.cache_creation_input_tokens
    assert read.cache_creation_input_tokens == 0
    cheap = TIERS[0]
    assert (cheap.cache_write_multiplier, cheap.cache_read_multiplier) == (1.25, 0.1)
    for response in responses:
        assert response.hops[0].cost_usd == pytest.approx(_priced(response.hops[0], 0))
        assert response.total_cost_usd == pytest.approx(response.hops[0].cost_usd)
    cached = write.cache_creation_input_tokens
    expected_saving = cached * (1.25 - 0.1) * cheap.input_usd_per_mtok / 1e6
    plain_difference = (
        (write.input_tokens - read.input_tokens) * cheap.input_usd_per_mtok
        + (write.output_tokens - read.output_tokens) * cheap.output_usd_per_mtok
    ) / 1e6
    assert write.cost_usd - read.cost_usd == pytest.approx(expected_saving + plain_difference)
    assert responses[0].tier.cache_write_multiplier == pytest.approx(1.25)
