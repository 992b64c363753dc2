"""How a chat-completions body maps onto the Messages API request the Cascade takes
(`api.http.openai.parse_chat`), and how OpenAI's error JSON is written (`openai_error`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import make_settings
from tierroute.api.http.errors import HttpError
from tierroute.api.http.openai import ParsedChat, openai_error, parse_chat
from tierroute.errors import InvalidRequest
from tierroute.v1 import tierroute_pb2 as pb

SETTINGS = make_settings()
USER = {"role": "user", "content": "What is 2 + 2?"}


def _parse(**fields: Any) -> ParsedChat:
    return parse_chat({"model": "tierroute", "messages": [USER], **fields}, SETTINGS)


def test_sampling_stop_limit_and_user_are_mapped() -> None:
    """temperature, top_p, stop, max_completion_tokens and user reach the request."""
    request = _parse(
        temperature=0.25, top_p=0.5, stop="END", max_completion_tokens=77, user="u-9"
    ).parsed.request
    assert (request.temperature, request.top_p) == (0.25, 0.5)
    assert list(request.stop_sequences) == ["END"]
    assert request.max_output_tokens == 77
    assert request.metadata_user_id == "u-9"


def test_max_tokens_is_the_older_name_of_the_limit() -> None:
    """max_tokens sets the limit as max_completion_tokens does."""
    assert _parse(max_tokens=12).parsed.request.max_output_tokens == 12


def test_no_limit_leaves_the_cascades_own() -> None:
    """Without a limit the request asks none (cascade.max_output_tokens applies)."""
    assert _parse().parsed.request.max_output_tokens == 0


def test_system_and_developer_messages_join_into_the_system_prompt() -> None:
    """Every system and developer message, in order, is the Messages API's system prompt."""
    messages = [
        {"role": "system", "content": "One."},
        {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
        USER,
    ]
    request = parse_chat({"model": "tierroute", "messages": messages}, SETTINGS).parsed.request
    system = request.messages[0]
    assert system.role == pb.ROLE_SYSTEM
    assert system.content == "One.\n\nTwo."
    assert [m.role for m in request.messages[1:]] == [pb.ROLE_USER]


def test_a_tool_loop_becomes_tool_use_and_tool_result_blocks() -> None:
    """An assistant's tool call is a tool_use block; the tool message a tool_result."""
    messages = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]
    request = parse_chat({"model": "tierroute", "messages": messages}, SETTINGS).parsed.request
    call = request.messages[1].blocks[0].tool_use
    assert (call.id, call.name, json.loads(call.input_json)) == ("call_1", "add", {"a": 2, "b": 2})
    result = request.messages[2].blocks[0].tool_result
    assert result.tool_use_id == "call_1"
    assert result.content[0].text.text == "4"


def test_consecutive_tool_messages_share_one_user_turn() -> None:
    """Parallel tool calls' results come back as one user turn, as the Messages API wants."""
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in range(2)
    ]
    messages = [
        USER,
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c0", "content": "a"},
        {"role": "tool", "tool_call_id": "c1", "content": "b"},
    ]
    request = parse_chat({"model": "tierroute", "messages": messages}, SETTINGS).parsed.request
    assert len(request.messages) == 3
    ids = [b.tool_result.tool_use_id for b in request.messages[2].blocks]
    assert ids == ["c0", "c1"]


def test_functions_become_custom_tools() -> None:
    """A function tool is a custom tool with its parameters as input_schema."""
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "s", "description": "d", "parameters": schema}}
    request = _parse(tools=[tool]).parsed.request
    (mapped,) = request.tools
    assert (mapped.name, mapped.description) == ("s", "d")
    assert json.loads(mapped.input_schema_json) == schema


@pytest.mark.parametrize(
    ("choice", "kind", "name"),
    [
        ("auto", pb.TOOL_CHOICE_TYPE_AUTO, ""),
        ("none", pb.TOOL_CHOICE_TYPE_NONE, ""),
        ("required", pb.TOOL_CHOICE_TYPE_ANY, ""),
        ({"type": "function", "function": {"name": "s"}}, pb.TOOL_CHOICE_TYPE_TOOL, "s"),
    ],
)
def test_tool_choice_maps_to_the_messages_apis(choice: Any, kind: int, name: str) -> None:
    """none, auto, required and a named function map to none, auto, any and tool."""
    tool = {"type": "function", "function": {"name": "s"}}
    mapped = _parse(tools=[tool], tool_choice=choice).parsed.request.tool_choice
    assert (mapped.type, mapped.name) == (kind, name)


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    """parallel_tool_calls: false is the Messages API's disable_parallel_tool_use."""
    tool = {"type": "function", "function": {"name": "s"}}
    mapped = _parse(tools=[tool], parallel_tool_calls=False).parsed.request.tool_choice
    assert mapped.type == pb.TOOL_CHOICE_TYPE_AUTO
    assert mapped.disable_parallel_tool_use


def test_images_become_image_blocks() -> None:
    """A base64 data URL is a base64 image source; an https URL a url source."""
    content = [
        {"type": "text", "text": "Compare."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    messages = [{"role": "user", "content": content}]
    request = parse_chat({"model": "tierroute", "messages": messages}, SETTINGS).parsed.request
    blocks = request.messages[0].blocks
    assert blocks[1].image.source.media_type == "image/png"
    assert blocks[1].image.source.data.startswith(b"\x89PNG")
    assert blocks[2].image.source.url == "https://example.com/a.png"


def test_a_tier_model_id_pins_its_tier_unjudged() -> None:
    """A tier's model id starts on that tier with no judge and nothing run ahead."""
    request = parse_chat({"model": "claude-sonnet-4-6", "messages": [USER]}, SETTINGS).parsed
    assert request.model.tier == "mid"
    assert request.request.start_tier == "mid"
    assert request.request.judge_mode == pb.JUDGE_MODE_NEVER


def test_stream_options_include_usage_is_kept() -> None:
    """stream_options.include_usage is what the stream's last chunk needs."""
    chat = _parse(stream=True, stream_options={"include_usage": True})
    assert chat.parsed.stream
    assert chat.include_usage


def test_differing_limits_are_refused() -> None:
    """max_tokens and max_completion_tokens that disagree are refused, not one chosen."""
    with pytest.raises(InvalidRequest, match="max_tokens"):
        _parse(max_tokens=5, max_completion_tokens=6)


def test_an_error_names_its_field_in_param() -> None:
    """A 400 whose message starts with a field path carries that path as `param`."""
    status, body = openai_error(HttpError(400, "invalid_request_error", "stop[1]: bad"))
    assert status == 400
    assert body == {
        "error": {
            "message": "stop[1]: bad",
            "type": "invalid_request_error",
            "param": "stop[1]",
            "code": None,
        }
    }


def test_anthropics_overloaded_is_openais_503() -> None:
    """529 (overloaded) is 503 with type server_error on this door."""
    status, body = openai_error(HttpError(529, "overloaded_error", "busy"))
    assert status == 503
    assert body["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("temperature must be within [0, 1]", "temperature"),
        ("stop_sequences has 17 entries; the limit is 16", "stop"),
        ("max_output_tokens 99999 is above the largest tier limit", "max_completion_tokens"),
        ("messages[1].blocks[0].text is empty", "messages"),
        ("messages[1].blocks[0]: unknown block", "messages"),
        ("query is empty", "messages"),
        ("messages[2].content[0].type: tierroute does not support 'file' parts", None),
    ],
)
def test_the_shared_conversions_refusals_name_the_chat_field(
    message: str, param: str | None
) -> None:
    """A refusal worded in the Cascade request's names carries the chat-completions field."""
    expected = param or message.partition(":")[0]
    _, body = openai_error(HttpError(400, "invalid_request_error", message))
    assert body["error"]["param"] == expected
    assert body["error"]["message"] == message


def test_a_bad_data_url_is_named_by_its_chat_path() -> None:
    """An image data URL whose base64 does not decode is refused at its own path."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
    with pytest.raises(InvalidRequest, match=r"^messages\[0\]\.content\[0\]\.image_url\.url: "):
        parse_chat(
            {"model": "tierroute", "messages": [{"role": "user", "content": [image]}]}, SETTINGS
        )


def test_a_long_unknown_field_is_named_but_not_echoed_whole() -> None:
    """An unknown field's name is cut in the message, however long the caller made it."""
    with pytest.raises(InvalidRequest) as caught:
        _parse(**{"k" * 60_000: 1})
    assert len(str(caught.value)) < 200
    assert str(caught.value).startswith("k" * 80 + "...: ")


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"messages": ["not a message"] * 16_385}, "messages: 16385 messages, over the limit"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 64 + [7]}]},
            "messages[0].content: 65 parts, over the limit",
        ),
        ({"messages": [USER], "stop": [7] * 17}, "stop: 17 entries, over the limit"),
        ({"messages": [USER], "tools": [7] * 65}, "tools: 65 entries, over the limit"),
    ],
)
def test_lists_are_counted_before_any_item_is_read(fields: dict[str, Any], refusal: str) -> None:
    """A list past its limit is refused by its length; no item of it is converted first."""
    with pytest.raises(InvalidRequest) as caught:
        parse_chat({"model": "tierroute", **fields}, SETTINGS)
    assert str(caught.value).startswith(refusal)
