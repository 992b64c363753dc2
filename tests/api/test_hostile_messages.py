"""The hostile set on the Messages API door: every malformed or hostile request ends in a 2xx
or a clean 4xx/429/529 in Anthropic's error JSON, never a 5xx, logs no traceback, and the
door answers a normal request afterwards; against the real server on port 0."""

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
from tests.helpers import make_settings
from tierroute.api.http import parse_request
from tierroute.errors import InvalidRequest

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

PATH = "/v1/messages"
HEADERS = {"x-api-key": "any", "anthropic-version": "2023-06-01"}
BASE: dict[str, Any] = {
    "model": "tierroute",
    "max_tokens": 64,
    "system": "Answer briefly.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}],
    "temperature": 0.5,
    "metadata": {"user_id": "u-1"},
}
TOOL = {"name": "lookup", "input_schema": {"type": "object"}}


def _body(**fields: Any) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def _turns(*content: Any) -> bytes:
    return _body(messages=[{"role": "user", "content": c} for c in content])


def _nested_object(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _tool_loop(tool_input: Any) -> bytes:
    """A conversation whose assistant turn called `lookup` with `tool_input`."""
    call = {"type": "tool_use", "id": "t", "name": "lookup", "input": tool_input}
    result = {"type": "tool_result", "tool_use_id": "t", "content": "r"}
    return _body(
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ],
    )


# Bodies that decode but break the Messages API's shape or limits, each with its statuses.
ANY_4XX = frozenset(range(400, 429))
MESSAGES_CASES = [
    Hostile("max_tokens 0", _body(max_tokens=0)),
    Hostile("max_tokens negative", _body(max_tokens=-1)),
    Hostile("max_tokens past int64", _body(max_tokens=10**30)),
    Hostile("max_tokens past int32", _body(max_tokens=2**31)),
    Hostile("max_tokens a string", _body(max_tokens="64")),
    Hostile("max_tokens true", _body(max_tokens=True)),
    Hostile("max_tokens fractional", _body(max_tokens=1.5)),
    Hostile("max_tokens null", _body(max_tokens=None)),
    Hostile("top_k past int64", _body(top_k=-(10**25))),
    Hostile("top_k negative", _body(top_k=-1)),
    Hostile("temperature 1e308", _body(temperature=1e308)),
    Hostile("temperature a list", _body(temperature=[1])),
    Hostile("top_p an object", _body(top_p={"p": 1})),
    Hostile("model empty", _body(model=""), statuses=ANY_4XX),
    Hostile("model a number", _body(model=7), statuses=ANY_4XX),
    Hostile("model NUL", _body(model="\u0000"), statuses=ANY_4XX),
    Hostile("model 60,000 characters", _body(model="m" * 60_000), statuses=ANY_4XX),
    Hostile("model unknown operating point", _body(model="tierroute@nope")),
    Hostile("no messages field", json.dumps({"model": "tierroute", "max_tokens": 5}).encode()),
    Hostile("messages empty", _body(messages=[])),
    Hostile("messages a string", _body(messages="hi")),
    Hostile("message not an object", _body(messages=["hi"])),
    Hostile("message role a list", _body(messages=[{"role": ["user"], "content": "x"}])),
    Hostile("message role an object", _body(messages=[{"role": {"a": 1}, "content": "x"}])),
    Hostile("message role system", _body(messages=[{"role": "system", "content": "x"}])),
    Hostile("content a number", _turns(7)),
    Hostile("content empty string", _turns("")),
    Hostile("content block without type", _turns([{"text": "x"}])),
    Hostile("content block type a list", _turns([{"type": ["text"], "text": "x"}])),
    Hostile("text block text null", _turns([{"type": "text", "text": None}])),
    Hostile(
        "image bad base64",
        _turns([{"type": "image", "source": {"type": "base64", "media_type": "x", "data": "@@"}}]),
    ),
    Hostile("image source a string", _turns([{"type": "image", "source": "x"}])),
    Hostile(
        "conversation ends with the assistant",
        _body(messages=[{"role": "assistant", "content": "x"}]),
    ),
    Hostile("system a number", _body(system=5)),
    Hostile("system block type a dict", _body(system=[{"type": {}, "text": "x"}])),
    Hostile("stream a string", _body(stream="yes")),
    Hostile("stop_sequences a string", _body(stop_sequences="x")),
    Hostile("stop_sequences numbers", _body(stop_sequences=[1])),
    Hostile("metadata extra field", _body(metadata={"user_id": "u", "x": 1})),
    Hostile("unknown field", _body(thinking={"type": "enabled"})),
    Hostile("unknown field 60,000 characters long", _body(**{"k" * 60_000: 1})),
    Hostile("tools an object", _body(tools={"name": "x"})),
    Hostile("tool without a schema", _body(tools=[{"name": "x"}])),
    Hostile("tool type a list", _body(tools=[{**TOOL, "type": ["custom"]}])),
    Hostile("tool_choice type a list", _body(tools=[TOOL], tool_choice={"type": ["auto"]})),
    Hostile("tool_choice a string", _body(tools=[TOOL], tool_choice="auto")),
    Hostile("tool_use input a list", _tool_loop([1])),
    Hostile(
        "tool_use input nested at the depth bound", _tool_loop(_nested_object(60)), statuses=CLEAN
    ),
    Hostile(
        "tool schema nested at the depth bound",
        _body(tools=[{"name": "deep", "input_schema": {"type": "object", **_nested_object(61)}}]),
        statuses=CLEAN,
    ),
    Hostile(
        "tool_result is_error a string",
        _turns([{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}]),
    ),
    Hostile(
        "cache_control a string",
        _turns([{"type": "text", "text": "x", "cache_control": "ephemeral"}]),
    ),
    Hostile(
        "text block 100,000 characters",
        _turns([{"type": "text", "text": "word " * 20_000}]),
        statuses=CLEAN,
    ),
    Hostile("many short messages", _turns(*["x"] * 5_000), statuses=CLEAN),
    # Streamed: a refusal comes before the stream begins, as an ordinary error.
    Hostile("streamed, max_tokens past int32", _body(stream=True, max_tokens=2**31)),
    Hostile("streamed, role a list", _body(stream=True, messages=[{"role": [], "content": "x"}])),
    Hostile(
        "streamed, a lone surrogate in a value",
        _body(stream=True)[:-1] + b', "x": "\\ud800"}',
    ),
    Hostile("streamed, a valid body", _body(stream=True), statuses=CLEAN),
]


def anthropic_error(body: Any) -> None:
    """Anthropic's error JSON with a readable message."""
    assert body["type"] == "error"
    assert isinstance(body["error"]["type"], str)
    assert body["error"]["type"] != "api_error"
    message = body["error"]["message"]
    assert isinstance(message, str)
    assert message
    assert "Traceback" not in message


CASES = hostile_bodies(BASE, max_body_bytes=LIMIT) + MESSAGES_CASES


def test_the_set_is_over_forty_cases_and_names_are_unique() -> None:
    """The kept set is larger than forty cases, each with its own name."""
    names = [case.name for case in CASES]
    assert len(names) > 40
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
    """A hostile request ends clean in Anthropic's JSON, untraced; the door answers after."""
    response = await send(door_http, PATH, case, HEADERS)
    assert_clean(response, case, anthropic_error)
    assert_no_traceback(caplog)
    after = await door_http.post(PATH, content=json.dumps(BASE).encode(), headers=HEADERS)
    assert after.status_code == 200, after.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}] * 300 + [{"role": "robot"}]},
            "messages has 301 turns; the limit is 256",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 65 + [7]}]},
            "messages.0 has 66 blocks; the limit is 64",
        ),
        ({"tools": [{"name": "t"}] * 65 + [7]}, "tools has 66 entries; the limit is 64"),
    ],
)
def test_counts_are_checked_before_any_item_is_read(fields: dict[str, Any], message: str) -> None:
    """Too many turns, blocks or tools are refused by count before any item is converted."""
    with pytest.raises(InvalidRequest) as caught:
        parse_request({**BASE, **fields}, make_settings())
    assert str(caught.value) == message
