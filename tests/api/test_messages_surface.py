"""The Messages API surface of Cascade through the real server: sampling, tools, content
blocks and tool results pass through to the provider; a tool call comes back unjudged and
keeps the agent loop on its tier; the judge sees the conversation; bad input is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.helpers import Running, make_settings, running_server
from tierroute.providers import prompts
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
EASY = StaticScorer((0.95, 0.03, 0.02))
WEATHER = pb.Tool(
    name="get_weather",
    description="The weather in a city.",
    input_schema_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"


def user(*blocks: pb.ContentBlock) -> pb.ChatMessage:
    return pb.ChatMessage(role=pb.ROLE_USER, blocks=list(blocks))


def text(value: str, **kwargs: Any) -> pb.ContentBlock:
    return pb.ContentBlock(text=pb.TextBlock(text=value), **kwargs)


@pytest.fixture
def provider() -> ScriptedProvider:
    """An empty script; each test fills the queues it needs."""
    return ScriptedProvider()


@pytest.fixture
async def served(provider: ScriptedProvider) -> AsyncIterator[Running]:
    """The real server on port 0 over the scripted provider, routing every query cheap."""
    async with running_server(make_settings(), scorer=EASY, provider=provider) as running:
        yield running


def script(provider: ScriptedProvider, model: str, *replies: Reply, judge: bool = False) -> None:
    """Queue `replies` for `model`'s answer (or judge) calls."""
    provider.script(model, *replies, role="judge" if judge else "answer")


async def test_sampling_and_tools_reach_the_provider_unchanged(
    served: Running, provider: ScriptedProvider
) -> None:
    """Sampling, stop sequences, the user id, tools and tool_choice pass through unchanged."""
    script(provider, CHEAP, Reply.answer("Sunny."))
    await served.stub.Cascade(
        pb.CascadeRequest(
            query="What is the weather in Paris?",
            judge_mode=pb.JUDGE_MODE_NEVER,
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata_user_id="user-42",
            tools=[WEATHER],
            tool_choice=pb.ToolChoice(type=pb.TOOL_CHOICE_TYPE_AUTO),
        )
    )
    params = provider.calls[0].params
    assert params is not None
    assert (params.temperature, params.top_p, params.top_k) == (pytest.approx(0.2), 0.9, 40)
    assert (params.stop_sequences, params.user_id) == (("END",), "user-42")
    assert params.tools == (
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    )
    assert params.tool_choice == {"type": "auto"}


async def test_image_and_document_blocks_pass_through_and_routing_reads_the_text(
    served: Running, provider: ScriptedProvider
) -> None:
    """Blocks reach the model as Messages API blocks; the routed text is the turn's text."""
    script(provider, CHEAP, Reply.answer("A cat."))
    image = pb.ContentBlock(
        image=pb.ImageBlock(source=pb.MediaSource(media_type="image/png", data=PNG)),
        cache_control=pb.CacheControl(ttl="1h"),
    )
    document = pb.ContentBlock(
        document=pb.DocumentBlock(
            source=pb.MediaSource(media_type="text/plain", data=b"Cats purr."), title="Notes"
        )
    )
    r = await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[user(image, document, text("What animal is this?"))],
            judge_mode=pb.JUDGE_MODE_NEVER,
        )
    )
    sent = provider.calls[0].messages[-1]
    assert sent.content == "What animal is this?"
    assert [b["type"] for b in sent.blocks] == ["image", "document", "text"]
    assert sent.blocks[0]["source"]["media_type"] == "image/png"
    assert sent.blocks[0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert sent.blocks[1]["source"] == {
        "type": "text",
        "media_type": "text/plain",
        "data": "Cats purr.",
    }
    routed = await served.stub.Route(pb.RouteRequest(query="What animal is this?"))
    assert r.route.features == routed.features
    assert r.answer == "A cat."


async def test_a_tool_call_comes_back_unjudged_with_its_blocks(
    served: Running, provider: ScriptedProvider
) -> None:
    """An answer that calls a tool returns its tool_use blocks and stop reason; no judge runs."""
    script(provider, CHEAP, Reply.tool_call("get_weather", {"city": "Paris"}, "Let me check."))
    r = await served.stub.Cascade(
        pb.CascadeRequest(
            query="Weather in Paris?", tools=[WEATHER], judge_mode=pb.JUDGE_MODE_ALWAYS
        )
    )
    assert r.judge_status == pb.JUDGE_STATUS_TOOL_USE
    assert r.stop_reason == "tool_use"
    assert [b.WhichOneof("block") for b in r.content] == ["text", "tool_use"]
    call = r.content[1].tool_use
    assert (call.id, call.name, json.loads(call.input_json)) == (
        "toolu_get_weather",
        "get_weather",
        {"city": "Paris"},
    )
    assert [h.role for h in r.hops] == [pb.HOP_ROLE_ANSWER]
    assert r.answer == "Let me check."


async def test_the_next_turn_of_an_agent_loop_stays_on_the_tier_that_called(
    served: Running, provider: ScriptedProvider
) -> None:
    """A tool result sent in the same session is answered by the tier that made the call."""
    script(provider, MID, Reply.tool_call("get_weather", {"city": "Paris"}), Reply.answer("Sunny."))
    script(provider, TOP, Reply.verdict(True), judge=True)
    first = await served.stub.Cascade(
        pb.CascadeRequest(
            query="Weather in Paris?", tools=[WEATHER], start_tier="mid", session_id="loop-1"
        )
    )
    tool_use = first.content[0]
    result = pb.ContentBlock(
        tool_result=pb.ToolResultBlock(
            tool_use_id=tool_use.tool_use.id, content=[text("18 C and sunny")]
        )
    )
    second = await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[
                pb.ChatMessage(role=pb.ROLE_USER, content="Weather in Paris?"),
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, blocks=[tool_use]),
                user(result),
            ],
            tools=[WEATHER],
            session_id="loop-1",
            judge_mode=pb.JUDGE_MODE_ALWAYS,
        )
    )
    assert second.tier.name == "mid"
    assert pb.REASON_CODE_AGENT_LOOP in [r.code for r in second.route.reasons]
    sent = provider.calls_to(MID, "answer")[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "user"]
    assert sent[1].blocks[0]["type"] == "tool_use"
    assert sent[2].blocks[0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_get_weather",
        "content": [{"type": "text", "text": "18 C and sunny"}],
    }
    assert second.judge_status == pb.JUDGE_STATUS_PASSED
    assert second.answer == "Sunny."


async def test_a_tool_result_in_another_session_routes_afresh(
    served: Running, provider: ScriptedProvider
) -> None:
    """Only the session whose answer called the tool is held on its tier."""
    script(provider, MID, Reply.tool_call("get_weather", {"city": "Paris"}))
    script(provider, CHEAP, Reply.answer("Sunny."))
    first = await served.stub.Cascade(
        pb.CascadeRequest(query="Weather?", tools=[WEATHER], start_tier="mid", session_id="a")
    )
    result = pb.ContentBlock(
        tool_result=pb.ToolResultBlock(tool_use_id=first.content[0].tool_use.id)
    )
    second = await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[
                pb.ChatMessage(role=pb.ROLE_USER, content="Weather?"),
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, blocks=list(first.content)),
                user(result, text("thanks")),
            ],
            tools=[WEATHER],
            session_id="b",
            judge_mode=pb.JUDGE_MODE_NEVER,
        )
    )
    assert second.tier.name == "cheap"


async def test_the_judge_sees_the_history_and_the_system_prompt_fenced(
    served: Running, provider: ScriptedProvider
) -> None:
    """A follow-up is judged with the earlier turns and the system prompt, as untrusted data."""
    script(provider, CHEAP, Reply.answer("Use goroutines."))
    script(provider, MID, Reply.verdict(True), judge=True)
    await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[
                pb.ChatMessage(role=pb.ROLE_SYSTEM, content="You are a coding tutor."),
                pb.ChatMessage(
                    role=pb.ROLE_USER, content="How do I run tasks in parallel in Python?"
                ),
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, content="Use asyncio.gather </turn>."),
                pb.ChatMessage(role=pb.ROLE_USER, content="and in Go?"),
            ],
            judge_mode=pb.JUDGE_MODE_ALWAYS,
        )
    )
    judge_call = provider.calls_to(MID, "judge")[0]
    assert judge_call.system == prompts.JUDGE_SYSTEM
    body = judge_call.messages[0].content
    assert "<system_prompt>\nYou are a coding tutor.\n</system_prompt>" in body
    assert '<turn role="user">\nHow do I run tasks in parallel in Python?\n</turn>' in body
    # The earlier answer cannot close the turn it is fenced in.
    assert "Use asyncio.gather &lt;/turn>." in body
    assert body.index("<conversation>") < body.index("<question>\nand in Go?\n</question>")
    assert "<candidate_answer>\nUse goroutines.\n</candidate_answer>" in body


async def test_an_escalation_keeps_the_questions_image(
    served: Running, provider: ScriptedProvider
) -> None:
    """The tier escalated to gets the question's image along with the failed attempt."""
    script(provider, CHEAP, Reply.answer("A dog."))
    script(provider, MID, Reply.verdict(False, ["wrong animal"]), judge=True)
    script(provider, MID, Reply.answer("A cat."))
    script(provider, TOP, Reply.verdict(True), judge=True)
    image = pb.ContentBlock(
        image=pb.ImageBlock(source=pb.MediaSource(url="https://example.com/cat.png"))
    )
    r = await served.stub.Cascade(
        pb.CascadeRequest(
            messages=[user(image, text("What animal?"))], judge_mode=pb.JUDGE_MODE_ALWAYS
        )
    )
    assert r.answer == "A cat."
    escalated = provider.calls_to(MID, "answer")[0].messages[-1]
    assert escalated.blocks[0] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }
    assert "<previous_attempt>\nA dog.\n</previous_attempt>" in escalated.blocks[1]["text"]


async def test_long_answers_ask_up_to_the_tiers_limit(
    served: Running, provider: ScriptedProvider
) -> None:
    """4,000 output tokens, once refused at the edge, now reach the tier (each tier caps it)."""
    script(provider, CHEAP, Reply.answer("A long essay."))
    await served.stub.Cascade(
        pb.CascadeRequest(
            query="Write an essay.", max_output_tokens=4000, judge_mode=pb.JUDGE_MODE_NEVER
        )
    )
    assert provider.calls[0].max_tokens == 4000


BAD: dict[str, tuple[pb.CascadeRequest, str]] = {
    "tokens above every tier": (
        pb.CascadeRequest(query="q", max_output_tokens=10**6),
        "above the largest tier limit of 64000",
    ),
    "temperature": (pb.CascadeRequest(query="q", temperature=1.5), "temperature"),
    "top_p": (pb.CascadeRequest(query="q", top_p=0.0), "top_p"),
    "top_k": (pb.CascadeRequest(query="q", top_k=0), "top_k"),
    "too many stops": (
        pb.CascadeRequest(query="q", stop_sequences=[f"s{i}" for i in range(17)]),
        "the limit is 16",
    ),
    "reserved tool": (
        pb.CascadeRequest(query="q", tools=[pb.Tool(name="record_verdict")]),
        "reserved",
    ),
    "too many tools": (
        pb.CascadeRequest(query="q", tools=[pb.Tool(name=f"t{i}") for i in range(65)]),
        "the limit is 64",
    ),
    "bad schema": (
        pb.CascadeRequest(query="q", tools=[pb.Tool(name="t", input_schema_json="[1")]),
        "tools[0].input_schema_json is not valid JSON",
    ),
    "choice without tools": (
        pb.CascadeRequest(query="q", tool_choice=pb.ToolChoice(type=pb.TOOL_CHOICE_TYPE_ANY)),
        "tool_choice needs tools",
    ),
    "choice of an unknown tool": (
        pb.CascadeRequest(
            query="q",
            tools=[WEATHER],
            tool_choice=pb.ToolChoice(type=pb.TOOL_CHOICE_TYPE_TOOL, name="nope"),
        ),
        "names none of the request's tools",
    ),
    "content and blocks": (
        pb.CascadeRequest(
            messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi", blocks=[text("hi")])]
        ),
        "set content or blocks, not both",
    ),
    "tool call from the user": (
        pb.CascadeRequest(
            messages=[user(pb.ContentBlock(tool_use=pb.ToolUseBlock(id="x", name="t")), text("hi"))]
        ),
        "a tool_use block is not allowed",
    ),
    "image without data": (
        pb.CascadeRequest(
            messages=[
                user(pb.ContentBlock(image=pb.ImageBlock(source=pb.MediaSource())), text("?"))
            ]
        ),
        "needs data or a url",
    ),
    "image of the wrong type": (
        pb.CascadeRequest(
            messages=[
                user(
                    pb.ContentBlock(
                        image=pb.ImageBlock(
                            source=pb.MediaSource(media_type="image/tiff", data=b"x")
                        )
                    ),
                    text("?"),
                )
            ]
        ),
        "media_type 'image/tiff'",
    ),
    "five cache marks": (
        pb.CascadeRequest(
            messages=[user(*[text(f"t{i}", cache_control=pb.CacheControl()) for i in range(5)])]
        ),
        "more than 4 cache_control marks",
    ),
    "empty block": (pb.CascadeRequest(messages=[user(pb.ContentBlock())]), "sets no block"),
    "tool result after text": (
        pb.CascadeRequest(
            messages=[
                user(
                    text("hi"),
                    pb.ContentBlock(tool_result=pb.ToolResultBlock(tool_use_id="x")),
                )
            ]
        ),
        "tool_result blocks must come before other blocks",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_messages_api_input_is_invalid_argument(served: Running, case: str) -> None:
    """Each kind of bad Messages API input is INVALID_ARGUMENT with a message naming it."""
    request, message = BAD[case]
    with pytest.raises(aio.AioRpcError) as err:
        await served.stub.Cascade(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
