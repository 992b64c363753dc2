"""The body of an Anthropic Messages API request (`POST /v1/messages`), read for routing.

`parse` decodes the body within `api.jsonbody`'s bounds (depth, numbers, keys, UTF-8) and
checks the JSON just enough to route it: an object with a `model` string and a `messages`
list of user and assistant turns whose content is a string or a list of blocks, within the
input limits. The text routing reads is the last user turn's text (or, when that
turn only brings tool results, the text of the user turn that asked), as for a Route call
with messages. `with_model` writes the same body back with another `model`; every other
field is kept as it came. Every refusal is an `InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from tierroute.api import jsonbody
from tierroute.errors import InvalidRequest, QueryTooLong
from tierroute.providers import Message
from tierroute.settings import LimitsConfig

_ROLES: tuple[Literal["user", "assistant"], ...] = ("user", "assistant")


@dataclass(frozen=True)
class MessagesBody:
    """A parsed Messages API request: its JSON, its model and the conversation to route."""

    data: dict[str, Any]
    model: str
    text: str
    history: tuple[Message, ...]
    tool_results: bool


@dataclass(frozen=True)
class _Turn:
    role: Literal["user", "assistant"]
    text: str
    results_text: str
    tool_results: bool


def parse(raw: bytes, limits: LimitsConfig) -> MessagesBody:
    """The request in `raw`; InvalidRequest when it is not a Messages API request."""
    data = jsonbody.decode_object(raw)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: must be a non-empty string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list")
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            f"messages has {len(messages)} turns; the limit is {limits.max_messages}"
        )
    turns = [_turn(m, f"messages[{i}]") for i, m in enumerate(messages)]
    total = sum(len(t.text) + len(t.results_text) for t in turns)
    if total > limits.max_query_chars:
        raise QueryTooLong(total, limits.max_query_chars)
    if turns[-1].role != "user":
        raise InvalidRequest("messages: the last turn must be the user's")
    asked = next((t for t in reversed(turns) if t.role == "user" and t.text.strip()), None)
    if asked is None:
        raise InvalidRequest("messages: no user turn has text to route on")
    return MessagesBody(
        data=data,
        model=model,
        text=asked.text,
        history=tuple(Message(t.role, t.text) for t in turns[:-1]),
        tool_results=turns[-1].tool_results,
    )


def _turn(message: object, where: str) -> _Turn:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where}: must be an object")
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequest(f"{where}.role: must be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        return _Turn(role, content, "", tool_results=False)
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: must be a string or a list of blocks")
    texts: list[str] = []
    results: list[str] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}.content[{i}]: must be an object with a type")
        if block["type"] == "text":
            texts.append(_text(block, f"{where}.content[{i}]"))
        elif block["type"] == "tool_result":
            results.append(_result_text(block.get("content"), f"{where}.content[{i}]"))
    return _Turn(role, "\n".join(texts), "\n".join(results), tool_results=bool(results))


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.text: must be a string")
    return text


def _result_text(content: object, where: str) -> str:
    # A tool result's content is a string, a list of blocks, or absent.
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: must be a string or a list of blocks")
    return "\n".join(
        _text(b, f"{where}.content[{i}]")
        for i, b in enumerate(content)
        if isinstance(b, dict) and b.get("type") == "text"
    )


def with_model(body: MessagesBody, model: str) -> bytes:
    """The request as JSON bytes with `model` replaced; key order and values kept."""
    data = {**body.data, "model": model}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
