"""The hostile set on the OpenAI-compatible door: every malformed or hostile request ends in
a 2xx or a clean 4xx/429 (or 503, this door's overloaded) in OpenAI's error JSON, never
another 5xx, logs no traceback, and the door answers a normal request afterwards; against
the real server on port 0."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import pytest

from tests.api.hostile_bodies import (
    CLEAN,
    LIMIT,
    Hostile,
    assert_clean,
    assert_no_traceback,
    hostile_bodies,
    send,
)

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

PATH = "/v1/chat/completions"
HEADERS = {"authorization": "Bearer any"}
BASE: dict[str, Any] = {
    "model": "tierroute",
    "max_completion_tokens": 64,
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
    ],
    "temperature": 0.5,
    "stop": ["END"],
    "user": "u-1",
}
FUNCTION = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
ANY_4XX = frozenset(range(400, 429))
# This door answers "overloaded" with 503 where the Messages door sends 529.
OPENAI_CLEAN = (CLEAN - {529}) | {503}


def _body(**fields: Any) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def _turns(*content: Any) -> bytes:
    return _body(messages=[{"role": "user", "content": c} for c in content])


def _tool_loop(call: Any, result: Any | None = None) -> bytes:
    """A conversation whose assistant message made tool call `call`, answered by `result`."""
    answer = result or {"role": "tool", "tool_call_id": "t", "content": "r"}
    return _body(
        tools=[FUNCTION],
        messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            answer,
        ],
    )


def _call(arguments: Any = "{}", **fields: Any) -> dict[str, Any]:
    return {
        "id": "t",
        "type": "function",
        "function": {"name": "lookup", "arguments": arguments},
        **fields,
    }


# Bodies that decode but break chat completions' shape or what tierroute serves.
OPENAI_CASES = [
    Hostile("n 0", _body(n=0)),
    Hostile("n 2", _body(n=2)),
    Hostile("n a string", _body(n="1")),
    Hostile("n true", _body(n=True)),
    Hostile("max_tokens 0", _body(max_tokens=0, max_completion_tokens=None)),
    Hostile("max_completion_tokens negative", _body(max_completion_tokens=-1)),
    Hostile("max_completion_tokens past int64", _body(max_completion_tokens=10**30)),
    Hostile("max_completion_tokens past int32", _body(max_completion_tokens=2**31)),
    Hostile("max_completion_tokens a string", _body(max_completion_tokens="64")),
    Hostile("max_completion_tokens true", _body(max_completion_tokens=True)),
    Hostile("max_completion_tokens fractional", _body(max_completion_tokens=1.5)),
    Hostile("max_tokens differs from max_completion_tokens", _body(max_tokens=32)),
    Hostile("temperature 1e308", _body(temperature=1e308)),
    Hostile("temperature above 1", _body(temperature=1.5)),
    Hostile("temperature a list", _body(temperature=[1])),
    Hostile("top_p an object", _body(top_p={"p": 1})),
    Hostile("stop a number", _body(stop=7)),
    Hostile("stop numbers", _body(stop=[1, 2])),
    Hostile("stop 10,000 strings", _body(stop=["s"] * 10_000), statuses=ANY_4XX),
    Hostile("user a number", _body(user=7)),
    Hostile("model empty", _body(model=""), statuses=ANY_4XX),
    Hostile("model a number", _body(model=7), statuses=ANY_4XX),
    Hostile("model NUL", _body(model="\u0000"), statuses=ANY_4XX),
    Hostile("model 60,000 characters", _body(model="m" * 60_000), statuses=ANY_4XX),
    Hostile("model unknown operating point", _body(model="tierroute@nope")),
    Hostile("no messages field", json.dumps({"model": "tierroute"}).encode()),
    Hostile("messages empty", _body(messages=[])),
    Hostile("messages a string", _body(messages="hi")),
    Hostile("message not an object", _body(messages=["hi"])),
    Hostile("only a system message", _body(messages=[{"role": "system", "content": "x"}])),
    Hostile("message role a list", _body(messages=[{"role": ["user"], "content": "x"}])),
    Hostile("message role an object", _body(messages=[{"role": {"a": 1}, "content": "x"}])),
    Hostile("message role function", _body(messages=[{"role": "function", "content": "x"}])),
    Hostile("message name", _body(messages=[{"role": "user", "content": "x", "name": "a"}])),
    Hostile("content a number", _turns(7)),
    Hostile("content null", _turns(None)),
    Hostile("content empty string", _turns("")),
    Hostile("content part without type", _turns([{"text": "x"}])),
    Hostile("content part type a list", _turns([{"type": ["text"], "text": "x"}])),
    Hostile("text part text null", _turns([{"type": "text", "text": None}])),
    Hostile("image_url a string", _turns([{"type": "image_url", "image_url": "x"}])),
    Hostile("image_url url a number", _turns([{"type": "image_url", "image_url": {"url": 1}}])),
    Hostile(
        "image data URL bad base64",
        _turns([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]),
    ),
    Hostile(
        "image file URL",
        _turns([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]),
    ),
    Hostile("input_audio part", _turns([{"type": "input_audio", "input_audio": {}}])),
    Hostile("file part", _turns([{"type": "file", "file": {"file_id": "f"}}])),
    Hostile(
        "system content an image part",
        _body(messages=[{"role": "system", "content": [{"type": "image_url"}]}]),
    ),
    Hostile(
        "conversation ends with the assistant",
        _body(messages=[{"role": "assistant", "content": "x"}]),
    ),
    Hostile(
        "assistant with neither content nor tool_calls",
        _body(messages=[{"role": "user", "content": "x"}, {"role": "assistant"}]),
    ),
    Hostile(
        "tool_calls an object",
        _body(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": _call()},
                {"role": "user", "content": "y"},
            ]
        ),
    ),
    Hostile("tool call arguments not JSON", _tool_loop(_call("{not json"))),
    Hostile("tool call arguments a JSON list", _tool_loop(_call("[1]"))),
    Hostile("tool call arguments an object", _tool_loop(_call({"a": 1}))),
    Hostile("tool call type custom", _tool_loop(_call(type="custom"))),
    Hostile("tool call without id", _tool_loop({**_call(), "id": None})),
    Hostile(
        "tool message without tool_call_id",
        _tool_loop(_call(), {"role": "tool", "content": "r"}),
    ),
    Hostile(
        "tool message id a number",
        _tool_loop(_call(), {"role": "tool", "tool_call_id": 5, "content": "r"}),
    ),
    Hostile(
        "tool message content an image",
        _tool_loop(_call(), {"role": "tool", "tool_call_id": "t", "content": [{"type": "image"}]}),
    ),
    Hostile(
        "tool message answering no call",
        _body(messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "z"}]),
    ),
    Hostile("tools an object", _body(tools=FUNCTION)),
    Hostile("tool type custom", _body(tools=[{"type": "custom", "custom": {"name": "x"}}])),
    Hostile("function without a name", _body(tools=[{"type": "function", "function": {}}])),
    Hostile(
        "function parameters a list",
        _body(tools=[{"type": "function", "function": {"name": "x", "parameters": [1]}}]),
    ),
    Hostile(
        "function strict",
        _body(tools=[{"type": "function", "function": {"name": "x", "strict": True}}]),
    ),
    Hostile("tool_choice a number", _body(tools=[FUNCTION], tool_choice=1)),
    Hostile("tool_choice unknown", _body(tools=[FUNCTION], tool_choice="sometimes")),
    Hostile(
        "tool_choice function without a name",
        _body(tools=[FUNCTION], tool_choice={"type": "function", "function": {}}),
    ),
    Hostile("parallel_tool_calls a string", _body(tools=[FUNCTION], parallel_tool_calls="no")),
    Hostile("stream a string", _body(stream="yes")),
    Hostile("stream_options without stream", _body(stream_options={"include_usage": True})),
    Hostile(
        "stream_options include_usage a string",
        _body(stream=True, stream_options={"include_usage": "yes"}),
    ),
    Hostile("stream_options unknown key", _body(stream=True, stream_options={"x": 1})),
    Hostile("logprobs true", _body(logprobs=True)),
    Hostile("response_format json_schema", _body(response_format={"type": "json_schema"})),
    Hostile("audio", _body(audio={"voice": "alloy"})),
    Hostile("seed", _body(seed=1)),
    Hostile("logit_bias", _body(logit_bias={"1": 5})),
    Hostile("functions", _body(functions=[{"name": "f"}])),
    Hostile("function_call", _body(function_call="auto")),
    Hostile("unknown field 60,000 characters long", _body(**{"k" * 60_000: 1})),
    Hostile(
        "text part 100,000 characters",
        _turns([{"type": "text", "text": "word " * 20_000}]),
        statuses=OPENAI_CLEAN,
    ),
    Hostile("many short messages", _turns(*["x"] * 5_000), statuses=OPENAI_CLEAN),
    Hostile("a streamed request", _body(stream=True), statuses=OPENAI_CLEAN),
]


def openai_error(body: Any) -> None:
    """OpenAI's error JSON with a readable message, not a server error."""
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] in ("invalid_request_error", "rate_limit_error")
    message = error["message"]
    assert isinstance(message, str)
    assert message
    assert "Traceback" not in message


CASES = hostile_bodies(BASE, max_body_bytes=LIMIT) + OPENAI_CASES


def test_the_set_is_over_forty_door_cases_and_names_are_unique() -> None:
    """The door's own cases number over forty (more with the decoding set), names unique."""
    names = [case.name for case in CASES]
    assert len(OPENAI_CASES) > 40
    assert len(set(names)) == len(names)


@IN_MODULE_LOOP
async def test_the_base_body_is_answered(door_http: httpx.AsyncClient) -> None:
    """The body every case is derived from is itself a valid request (200)."""
    response = await door_http.post(PATH, content=json.dumps(BASE).encode(), headers=HEADERS)
    assert response.status_code == 200, response.text


@IN_MODULE_LOOP
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_a_hostile_request_ends_clean_and_the_door_answers_after(
    door_http: httpx.AsyncClient, case: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile request gets an allowed status in OpenAI's error JSON, no traceback is
    logged, and the next normal request is answered."""
    response = await send(door_http, PATH, case, HEADERS)
    assert_clean(response, case, openai_error)
    assert_no_traceback(caplog)
    after = await door_http.post(PATH, content=json.dumps(BASE).encode(), headers=HEADERS)
    assert after.status_code == 200, after.text
