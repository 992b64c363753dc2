"""An OpenAI chat-completions request as the Messages API request the Cascade takes, and a
result as a ChatCompletion.

The body is translated field by field into a Messages API body (system and developer
messages to `system`, tool calls to `tool_use` blocks, tool messages to `tool_result`
blocks, `stop` to `stop_sequences`, `user` to `metadata.user_id`, ...), which
`messages.parse_request` then turns into the same `CascadeRequest` the Messages door
builds, checked by the same conversion. A field tierroute does not serve (n > 1, logprobs,
a JSON response format, audio, ...) is refused with a message that names it, never
dropped; a field set to what tierroute does anyway (n = 1, `response_format` text,
`logprobs` false) is accepted. Errors are OpenAI's error JSON (`openai_error`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierroute.api import jsonbody
from tierroute.api.http.errors import HttpError
from tierroute.api.http.messages import (
    ParsedRequest,
    answer_blocks,
    answer_hop,
    answer_model,
    need,
    parse_request,
)
from tierroute.cascade import CascadeResult
from tierroute.errors import InvalidRequest
from tierroute.settings import LimitsConfig, Settings

# Fields mapped onto the Messages API request.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
    }
)
# Fields accepted only at the value that asks for nothing tierroute does not do.
_NEUTRAL: Mapping[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "store": (None, False),
    "modalities": (None, ["text"]),
    "response_format": (None, {"type": "text"}),
    "service_tier": (None, "auto", "default"),
}
# The fields of each role's message that are mapped.
_MESSAGE_FIELDS: Mapping[str, frozenset[str]] = {
    "system": frozenset({"role", "content"}),
    "developer": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_STOP_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
# A message that starts with a field path names that field (`messages[2].content: ...`).
_PARAM = re.compile(r"(?P<param>[A-Za-z_][\w.\[\]]*): ")
_LEADING = re.compile(r"[A-Za-z_]+")
# The field a message of the shared conversion (`api.convert`, `api.blocks`: the Cascade's
# request, whose turns and names differ from chat completions') names first, as the
# chat-completions field it came from.
_CONVERTED: Mapping[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "stop_sequences": "stop",
    "max_output_tokens": "max_completion_tokens",
    "metadata": "user",
    "tool_choice": "tool_choice",
    "tools": "tools",
    "messages": "messages",
    "query": "messages",
}
# The most of a caller's field name a message shows.
_SHOWN = 80
# OpenAI answers 529's meaning (busy, retry) with 503; its SDKs retry both.
_STATUS = {529: 503}
_KINDS: Mapping[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "overloaded"),
    504: ("server_error", "timeout"),
}


@dataclass(frozen=True)
class ParsedChat:
    """A chat-completions request as the Cascade's request, and what its reply needs."""

    parsed: ParsedRequest
    # stream_options.include_usage: a last chunk carries the usage.
    include_usage: bool = False


def _neutral(value: Any, allowed: Sequence[Any]) -> bool:
    # 1 == True in Python; in JSON a number is never a boolean.
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)


def _unsupported(where: str, what: str = "this field") -> InvalidRequest:
    # A field's name is the caller's text: never echoed whole.
    shown = where if len(where) <= _SHOWN else f"{where[:_SHOWN]}..."
    return InvalidRequest(f"{shown}: tierroute does not support {what}")


def parse_chat(body: Any, settings: Settings, operating_points: Sequence[str] = ()) -> ParsedChat:
    """The request body as a CascadeRequest; InvalidRequest naming the field at fault."""
    need(body, dict, "the request body", "a JSON object")
    _check_fields(body)
    out: dict[str, Any] = {"model": need(body["model"], str, "model", "a string")}
    limits = settings.limits
    messages = need(body["messages"], list, "messages", "a list of messages")
    # Every message but a system one is at least one block of a turn.
    _counted(messages, limits.max_messages * limits.max_blocks_per_message, "messages", "messages")
    system, turns = _conversation(messages, limits)
    if system:
        out["system"] = system
    out["messages"] = turns
    limit = _max_tokens(body)
    out["max_tokens"] = limit or 1
    out.update(_sampling(body, limits))
    tools = need(body.get("tools") or [], list, "tools", "a list of tools")
    _counted(tools, limits.max_tools, "tools", "entries")
    if tools:
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    stream, include_usage = _streaming(body)
    parsed = parse_request(out, settings, operating_points)
    if limit is None:
        # No limit asked: the Cascade's own (cascade.max_output_tokens) applies.
        parsed.request.max_output_tokens = 0
    return ParsedChat(ParsedRequest(parsed.request, parsed.model, stream), include_usage)


def _check_fields(body: Mapping[str, Any]) -> None:
    """Every field is one tierroute maps, or one set to what tierroute does anyway."""
    for key in sorted(body):
        if key in _MAPPED:
            continue
        if key not in _NEUTRAL:
            raise _unsupported(key)
        if not _neutral(body[key], _NEUTRAL[key]):
            raise _unsupported(key, f"{key} = {json.dumps(body[key])[:60]}")
    for key in ("model", "messages"):
        if key not in body:
            raise InvalidRequest(f"{key}: field required")


def _counted(items: list[Any], limit: int, where: str, unit: str) -> None:
    # Counted before any item is converted, so a body of a million messages or parts costs
    # no million conversions before the Messages door's own check refuses it.
    if len(items) > limit:
        raise InvalidRequest(f"{where}: {len(items)} {unit}, over the limit of {limit}")


def _sampling(body: Mapping[str, Any], limits: LimitsConfig) -> dict[str, Any]:
    """temperature, top_p, stop and user as the Messages API has them."""
    out: dict[str, Any] = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else need(stop, list, "stop", "a string or a list")
        _counted(stops, limits.max_stop_sequences, "stop", "entries")
        out["stop_sequences"] = [
            need(s, str, f"stop[{i}]", "a string") for i, s in enumerate(stops)
        ]
    if body.get("user") is not None:
        out["metadata"] = {"user_id": need(body["user"], str, "user", "a string")}
    return out


def _streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stream, stream_options.include_usage)."""
    stream = body.get("stream")
    stream = False if stream is None else need(stream, bool, "stream", "true or false")
    options = need(body.get("stream_options") or {}, dict, "stream_options", "an object")
    if options and not stream:
        raise InvalidRequest("stream_options: only allowed when stream is true")
    unknown = sorted(set(options) - {"include_usage", "include_obfuscation"})
    if unknown:
        raise _unsupported(f"stream_options.{unknown[0]}")
    include_usage = need(
        options.get("include_usage", False), bool, "stream_options.include_usage", "true or false"
    )
    return stream, include_usage


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    values = {
        k: body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None
    }
    for key, value in values.items():
        if need(value, int, key, "an integer") < 1:
            raise InvalidRequest(f"{key}: must be at least 1")
    if len(set(values.values())) > 1:
        raise InvalidRequest("max_tokens: differs from max_completion_tokens; send one of them")
    return next(iter(values.values()), None)


def _conversation(messages: list[Any], limits: LimitsConfig) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt (every system and developer message, in order) and the turns, with
    consecutive turns of one role joined, as the Messages API has them."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        need(message, dict, where, "a message object")
        role = message.get("role")
        allowed = _MESSAGE_FIELDS.get(role) if isinstance(role, str) else None
        if allowed is None:
            raise InvalidRequest(
                f"{where}.role: expected 'system', 'developer', 'user', 'assistant' or 'tool'"
            )
        unknown = sorted(set(message) - allowed)
        if unknown:
            raise _unsupported(f"{where}.{unknown[0]}")
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), f"{where}.content", limits))
            continue
        if role == "user":
            blocks = _user_content(message.get("content"), f"{where}.content", limits)
            _append(turns, "user", blocks)
        elif role == "assistant":
            _append(turns, "assistant", _assistant(message, where, limits))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": need(
                    message.get("tool_call_id"), str, f"{where}.tool_call_id", "a string"
                ),
                "content": _text(message.get("content"), f"{where}.content", limits),
            }
            _append(turns, "user", [result])
    return "\n\n".join(s for s in system if s), turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        # Tool results lead their turn, as the Messages API wants them.
        results = [b for b in previous + blocks if b["type"] == "tool_result"]
        others = [b for b in previous + blocks if b["type"] != "tool_result"]
        turns[-1]["content"] = results + others
    else:
        turns.append({"role": role, "content": blocks})


def _text(content: Any, where: str, limits: LimitsConfig) -> str:
    """A message's text: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    parts = need(content, list, where, "a string or a list of text parts")
    _counted(parts, limits.max_blocks_per_message, where, "parts")
    texts = []
    for i, part in enumerate(parts):
        need(part, dict, f"{where}[{i}]", "a content part object")
        if part.get("type") != "text":
            raise _unsupported(f"{where}[{i}].type", f"{str(part.get('type'))[:40]!r} parts here")
        texts.append(need(part.get("text"), str, f"{where}[{i}].text", "a string"))
    return "".join(texts)


def _user_content(content: Any, where: str, limits: LimitsConfig) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = need(content, list, where, "a string or a list of content parts")
    _counted(parts, limits.max_blocks_per_message, where, "parts")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        at = f"{where}[{i}]"
        need(part, dict, at, "a content part object")
        kind = part.get("type")
        if kind == "text":
            blocks.append(
                {"type": "text", "text": need(part.get("text"), str, f"{at}.text", "a string")}
            )
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{at}.image_url"))
        else:
            raise _unsupported(f"{at}.type", f"{str(kind)[:40]!r} parts")
    return blocks


def _image(image: Any, where: str) -> dict[str, Any]:
    need(image, dict, where, "an object")
    url = need(image.get("url"), str, f"{where}.url", "a string")
    data = _DATA_URL.fullmatch(url)
    if data is not None:
        try:
            base64.b64decode(data["data"], validate=True)
        except binascii.Error as exc:
            raise InvalidRequest(f"{where}.url: the data URL's base64 is not valid") from exc
        source = {"type": "base64", "media_type": data["media"], "data": data["data"]}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise InvalidRequest(f"{where}.url: expected an http(s) URL or a base64 data URL")
    return {"type": "image", "source": source}


def _assistant(
    message: Mapping[str, Any], where: str, limits: LimitsConfig
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content is not None:
        if isinstance(content, list):
            _counted(content, limits.max_blocks_per_message, f"{where}.content", "parts")
            # An assistant's refusal parts are text it said.
            content = [
                {"type": "text", "text": p.get("refusal")}
                if isinstance(p, dict) and p.get("type") == "refusal"
                else p
                for p in content
            ]
        text = _text(content, f"{where}.content", limits)
        if text:
            blocks.append({"type": "text", "text": text})
    calls = need(message.get("tool_calls") or [], list, f"{where}.tool_calls", "a list")
    _counted(calls, limits.max_blocks_per_message, f"{where}.tool_calls", "calls")
    for i, call in enumerate(calls):
        at = f"{where}.tool_calls[{i}]"
        need(call, dict, at, "a tool call object")
        if call.get("type", "function") != "function":
            raise _unsupported(f"{at}.type", "tool calls other than functions")
        function = need(call.get("function"), dict, f"{at}.function", "an object")
        arguments = need(function.get("arguments"), str, f"{at}.function.arguments", "a string")
        # JSON inside a string, held to the body's bounds (depth, numbers, keys).
        decoded = jsonbody.decode_embedded(arguments, f"{at}.function.arguments")
        blocks.append(
            {
                "type": "tool_use",
                "id": need(call.get("id"), str, f"{at}.id", "a string"),
                "name": need(function.get("name"), str, f"{at}.function.name", "a string"),
                "input": need(decoded, dict, f"{at}.function.arguments", "a JSON object"),
            }
        )
    if not blocks:
        raise InvalidRequest(f"{where}: an assistant message needs content or tool_calls")
    return blocks


def _tool(tool: Any, where: str) -> dict[str, Any]:
    need(tool, dict, where, "a tool object")
    if tool.get("type") != "function":
        raise _unsupported(f"{where}.type", "tools other than functions")
    function = need(tool.get("function"), dict, f"{where}.function", "an object")
    unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
    if unknown:
        raise _unsupported(f"{where}.function.{unknown[0]}")
    if function.get("strict"):
        raise _unsupported(f"{where}.function.strict", "strict function schemas")
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "name": need(function.get("name"), str, f"{where}.function.name", "a string"),
        "description": need(
            function.get("description") or "", str, f"{where}.function.description", "a string"
        ),
        "input_schema": need(schema, dict, f"{where}.function.parameters", "an object"),
    }


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = need(choice.get("function"), dict, "tool_choice.function", "an object")
        name = need(function.get("name"), str, "tool_choice.function.name", "a string")
        out = {"type": "tool", "name": name}
    else:
        raise InvalidRequest(
            "tool_choice: expected 'none', 'auto', 'required' or a function to call"
        )
    if parallel is None:
        return out
    if not need(parallel, bool, "parallel_tool_calls", "true or false"):
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


# -- the response -----------------------------------------------------------------------


def completion_id(request_id: str) -> str:
    """The ChatCompletion id of a request (OpenAI's ids start chatcmpl-)."""
    return f"chatcmpl-{request_id}"


def finish_reason(result: CascadeResult) -> str:
    """The answer's stop reason in OpenAI's words."""
    return _STOP_REASONS.get(result.stop_reason or "end_turn", "stop")


def usage(result: CascadeResult) -> dict[str, Any]:
    """The answering call's tokens as OpenAI counts them: the prompt includes its cached part."""
    hop = answer_hop(result)
    if hop is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    prompt = hop.input_tokens + hop.cache_creation_input_tokens + hop.cache_read_input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": hop.output_tokens,
        "total_tokens": prompt + hop.output_tokens,
        "prompt_tokens_details": {"cached_tokens": hop.cache_read_input_tokens},
    }


def tool_calls(result: CascadeResult) -> list[dict[str, Any]]:
    """The answer's tool calls in OpenAI's shape (arguments as a JSON string)."""
    return [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block["input"])},
        }
        for block in answer_blocks(result)
        if block["type"] == "tool_use"
    ]


def completion_json(result: CascadeResult) -> dict[str, Any]:
    """A cascade result as OpenAI's ChatCompletion object."""
    text = "".join(b["text"] for b in answer_blocks(result) if b["type"] == "text")
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    calls = tool_calls(result)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(result.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer_model(result),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": usage(result),
        "system_fingerprint": None,
    }


def _param(message: str) -> str | None:
    """The chat-completions field a refusal's message names, if it names one."""
    named = _PARAM.match(message)
    if named is not None and ".blocks[" not in named["param"]:
        # This module's own paths (messages[2].content[0].type) and the fields both APIs
        # share a name for (model, temperature).
        return named["param"]
    leading = _LEADING.match(message)
    return _CONVERTED.get(leading[0]) if leading is not None else None


def openai_error(error: HttpError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI's error JSON for an error: `param` names the field at fault."""
    status = _STATUS.get(error.status, error.status)
    kind, code = _KINDS.get(status, ("server_error", None))
    param = _param(error.message) if status == 400 else None
    if status == 404 and error.message.startswith("model:"):
        param, code = "model", "model_not_found"
    body = {"error": {"message": error.message, "type": kind, "param": param, "code": code}}
    return status, body
