"""A Messages API request body as the Cascade's own request, and a result as a Message.

The body becomes a `CascadeRequest`, so that the gRPC path's conversion (`api.convert`,
`api.blocks`) checks it against the same input limits with the same messages, and nothing
is validated twice in two ways. Here only the JSON's shape is checked: types, known fields
and block kinds. The `model` field chooses what answers (`choose_model`): `tierroute` runs
the Cascade at the default operating point, `tierroute@NAME` at operating point NAME, and a
configured tier's model id goes straight to that tier alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierroute.cascade import CascadeResult, Hop
from tierroute.errors import InvalidRequest, NotFound
from tierroute.settings import LimitsConfig, Settings
from tierroute.v1 import tierroute_pb2 as pb

CASCADE_MODEL = "tierroute"
_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
    }
)
_ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}
_TOOL_CHOICES = {
    "auto": pb.TOOL_CHOICE_TYPE_AUTO,
    "any": pb.TOOL_CHOICE_TYPE_ANY,
    "tool": pb.TOOL_CHOICE_TYPE_TOOL,
    "none": pb.TOOL_CHOICE_TYPE_NONE,
}


@dataclass(frozen=True)
class ModelChoice:
    """What the request's `model` asks for: the Cascade (at an operating point) or a tier."""

    requested: str
    # A concrete model id's tier, which answers alone; None runs the Cascade.
    tier: str | None = None
    # `tierroute@NAME`: the Cascade at operating point NAME ("" = the default).
    operating_point: str = ""

    @property
    def strategy(self) -> str | None:
        """The x-tierroute-strategy of a pinned model ("direct"); None for the Cascade."""
        return "direct" if self.tier is not None else None


def choose_model(name: str, settings: Settings, operating_points: Sequence[str]) -> ModelChoice:
    """The `model` field as a choice; InvalidRequest or NotFound naming what may be asked."""
    if name == CASCADE_MODEL:
        return ModelChoice(name)
    if name.startswith(f"{CASCADE_MODEL}@"):
        point = name[len(CASCADE_MODEL) + 1 :]
        if point not in operating_points:
            known = ", ".join(operating_points) or "none: the served model ships none"
            raise InvalidRequest(
                f"model: {name[:80]!r} names no operating point of the served model; "
                f"known operating points: {known}"
            )
        return ModelChoice(name, operating_point=point)
    for tier in settings.tiers:
        if tier.model == name:
            return ModelChoice(name, tier=tier.name)
    raise NotFound(f"model: {name[:80]!r} is not served here; {model_names(settings, ())}")


def model_names(settings: Settings, operating_points: Sequence[str]) -> str:
    """A sentence naming every model id a request may send."""
    ids = [CASCADE_MODEL, *(f"{CASCADE_MODEL}@{p}" for p in operating_points)]
    ids.extend(t.model for t in settings.tiers)
    return "use one of " + ", ".join(ids)


def need(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """`value` when it is a `kind` (a bool never counts as a number); else InvalidRequest."""
    # bool is an int in Python but never a number in JSON Schema.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidRequest(f"{where}: expected {what}")
    return value


def _int32(value: Any, where: str) -> int:
    # The request's integers are int32 fields: a larger one is refused here, by name.
    number: int = need(value, int, where, "an integer")
    if not -(2**31) <= number < 2**31:
        raise InvalidRequest(f"{where}: {str(number)[:20]} is out of range")
    return number


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    number = float(need(value, (int, float), key, "a number"))
    if not math.isfinite(number):
        raise InvalidRequest(f"{key}: expected a finite number")
    return number


@dataclass(frozen=True)
class ParsedRequest:
    """A Messages API request as the Cascade's request, with what the edge itself uses."""

    request: pb.CascadeRequest
    model: ModelChoice
    stream: bool


def parse_request(
    body: Any, settings: Settings, operating_points: Sequence[str] = ()
) -> ParsedRequest:
    """The request body as a CascadeRequest; InvalidRequest naming the field at fault."""
    need(body, dict, "the request body", "a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0][:80]}: tierroute does not support this field")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise InvalidRequest(f"{key}: field required")
    model = choose_model(need(body["model"], str, "model", "a string"), settings, operating_points)
    max_tokens = _int32(body["max_tokens"], "max_tokens")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: must be at least 1")
    request = pb.CascadeRequest(max_output_tokens=max_tokens)
    limits = settings.limits
    if "system" in body:
        request.messages.append(_system(body["system"], limits))
    messages = need(body["messages"], list, "messages", "a list of messages")
    _counted(messages, limits.max_messages, "messages", "turns")
    request.messages.extend(_message(m, f"messages.{i}", limits) for i, m in enumerate(messages))
    for key in ("temperature", "top_p"):
        value = _number(body, key)
        if value is not None:
            setattr(request, key, value)
    if body.get("top_k") is not None:
        request.top_k = _int32(body["top_k"], "top_k")
    stops = need(body.get("stop_sequences") or [], list, "stop_sequences", "a list")
    _counted(stops, limits.max_stop_sequences, "stop_sequences", "entries")
    request.stop_sequences.extend(
        need(s, str, f"stop_sequences.{i}", "a string") for i, s in enumerate(stops)
    )
    metadata = need(body.get("metadata") or {}, dict, "metadata", "an object")
    if set(metadata) - {"user_id"}:
        raise InvalidRequest("metadata: only user_id is accepted")
    if metadata.get("user_id") is not None:
        request.metadata_user_id = need(metadata["user_id"], str, "metadata.user_id", "a string")
    tools = need(body.get("tools") or [], list, "tools", "a list of tools")
    _counted(tools, limits.max_tools, "tools", "entries")
    request.tools.extend(_tool(t, f"tools.{i}") for i, t in enumerate(tools))
    if body.get("tool_choice") is not None:
        request.tool_choice.CopyFrom(_tool_choice(body["tool_choice"]))
    stream = need(body.get("stream", False), bool, "stream", "true or false")
    _apply_model(request, model)
    return ParsedRequest(request, model, stream)


def _apply_model(request: pb.CascadeRequest, model: ModelChoice) -> None:
    # `choose_model` admits only names the served model ships; the router checks it again.
    request.policy.operating_point = model.operating_point
    if model.tier is not None:
        # A concrete model answers alone: no judge, nothing run ahead.
        request.start_tier = model.tier
        request.judge_mode = pb.JUDGE_MODE_NEVER
        request.speculation = pb.SPECULATION_MODE_OFF


def _counted(items: list[Any], limit: int, where: str, unit: str) -> None:
    # Counted before any item is converted, so that a body of a million turns or blocks costs
    # no million protobuf messages before the conversion's own check (api.convert, the same
    # limit and words) refuses it.
    if len(items) > limit:
        raise InvalidRequest(f"{where} has {len(items)} {unit}; the limit is {limit}")


def _system(system: Any, limits: LimitsConfig) -> pb.ChatMessage:
    if isinstance(system, str):
        return pb.ChatMessage(role=pb.ROLE_SYSTEM, content=system)
    blocks = need(system, list, "system", "a string or a list of text blocks")
    _counted(blocks, limits.max_blocks_per_message, "system", "blocks")
    return pb.ChatMessage(
        role=pb.ROLE_SYSTEM,
        blocks=[_block(b, f"system.{i}", limits) for i, b in enumerate(blocks)],
    )


def _message(message: Any, where: str, limits: LimitsConfig) -> pb.ChatMessage:
    need(message, dict, where, "a message object")
    unknown = set(message) - {"role", "content"}
    if unknown:
        raise InvalidRequest(
            f"{where}.{sorted(unknown)[0][:80]}: tierroute does not support this field"
        )
    role = message.get("role")
    role = _ROLES.get(role) if isinstance(role, str) else None
    if role is None:
        raise InvalidRequest(f"{where}.role: expected 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        return pb.ChatMessage(role=role, content=content)
    blocks = need(content, list, f"{where}.content", "a string or a list of content blocks")
    _counted(blocks, limits.max_blocks_per_message, where, "blocks")
    return pb.ChatMessage(
        role=role,
        blocks=[_block(b, f"{where}.content.{i}", limits) for i, b in enumerate(blocks)],
    )


def _cache_control(block: Mapping[str, Any], where: str) -> pb.CacheControl | None:
    control = block.get("cache_control")
    if control is None:
        return None
    need(control, dict, f"{where}.cache_control", "an object")
    return pb.CacheControl(
        type=need(control.get("type", ""), str, f"{where}.cache_control.type", "a string"),
        ttl=need(control.get("ttl", ""), str, f"{where}.cache_control.ttl", "a string"),
    )


def _block(block: Any, where: str, limits: LimitsConfig) -> pb.ContentBlock:
    need(block, dict, where, "a content block object")
    kind = block.get("type")
    out = pb.ContentBlock()
    if kind == "text":
        out.text.text = need(block.get("text"), str, f"{where}.text", "a string")
    elif kind == "image":
        out.image.source.CopyFrom(_source(block.get("source"), f"{where}.source"))
    elif kind == "document":
        out.document.CopyFrom(_document(block, where))
    elif kind == "tool_use":
        out.tool_use.CopyFrom(
            pb.ToolUseBlock(
                id=need(block.get("id"), str, f"{where}.id", "a string"),
                name=need(block.get("name"), str, f"{where}.name", "a string"),
                input_json=json.dumps(
                    need(block.get("input", {}), dict, f"{where}.input", "an object")
                ),
            )
        )
    elif kind == "tool_result":
        out.tool_result.CopyFrom(_tool_result(block, where, limits))
    else:
        raise InvalidRequest(f"{where}.type: tierroute does not accept {str(kind)[:40]!r} blocks")
    control = _cache_control(block, where)
    if control is not None:
        out.cache_control.CopyFrom(control)
    return out


def _source(source: Any, where: str) -> pb.MediaSource:
    need(source, dict, where, "a source object")
    kind = source.get("type")
    if kind == "url":
        return pb.MediaSource(url=need(source.get("url"), str, f"{where}.url", "a string"))
    media_type = need(source.get("media_type"), str, f"{where}.media_type", "a string")
    data = need(source.get("data"), str, f"{where}.data", "a string")
    if kind == "text":
        return pb.MediaSource(media_type=media_type, data=data.encode("utf-8"))
    if kind != "base64":
        raise InvalidRequest(f"{where}.type: expected 'base64', 'url' or 'text'")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"{where}.data: not valid base64") from exc
    return pb.MediaSource(media_type=media_type, data=raw)


def _document(block: Mapping[str, Any], where: str) -> pb.DocumentBlock:
    citations = block.get("citations") or {}
    need(citations, dict, f"{where}.citations", "an object")
    return pb.DocumentBlock(
        source=_source(block.get("source"), f"{where}.source"),
        title=need(block.get("title") or "", str, f"{where}.title", "a string"),
        context=need(block.get("context") or "", str, f"{where}.context", "a string"),
        citations=bool(citations.get("enabled", False)),
    )


def _tool_result(block: Mapping[str, Any], where: str, limits: LimitsConfig) -> pb.ToolResultBlock:
    content = block.get("content", [])
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    need(content, list, f"{where}.content", "a string or a list of content blocks")
    _counted(content, limits.max_blocks_per_message, f"{where}.content", "blocks")
    return pb.ToolResultBlock(
        tool_use_id=need(block.get("tool_use_id"), str, f"{where}.tool_use_id", "a string"),
        content=[_block(b, f"{where}.content.{i}", limits) for i, b in enumerate(content)],
        is_error=need(block.get("is_error", False), bool, f"{where}.is_error", "true or false"),
    )


def _tool(tool: Any, where: str) -> pb.Tool:
    need(tool, dict, where, "a tool object")
    if tool.get("type") not in (None, "custom"):
        raise InvalidRequest(f"{where}.type: tierroute serves custom tools only")
    out = pb.Tool(
        name=need(tool.get("name"), str, f"{where}.name", "a string"),
        description=need(tool.get("description") or "", str, f"{where}.description", "a string"),
        input_schema_json=json.dumps(
            need(tool.get("input_schema"), dict, f"{where}.input_schema", "an object")
        ),
    )
    control = _cache_control(tool, where)
    if control is not None:
        out.cache_control.CopyFrom(control)
    return out


def _tool_choice(choice: Any) -> pb.ToolChoice:
    need(choice, dict, "tool_choice", "an object")
    kind = choice.get("type")
    kind = _TOOL_CHOICES.get(kind) if isinstance(kind, str) else None
    if kind is None:
        raise InvalidRequest("tool_choice.type: expected 'auto', 'any', 'tool' or 'none'")
    return pb.ToolChoice(
        type=kind,
        name=need(choice.get("name") or "", str, "tool_choice.name", "a string"),
        disable_parallel_tool_use=need(
            choice.get("disable_parallel_tool_use", False),
            bool,
            "tool_choice.disable_parallel_tool_use",
            "true or false",
        ),
    )


# -- the response -----------------------------------------------------------------------


def answer_hop(result: CascadeResult) -> Hop | None:
    """The call that wrote the answer: the answering tier's last completed answer call."""
    for hop in reversed(result.hops):
        if hop.role == "answer" and hop.outcome == "ok" and hop.tier == result.tier.name:
            return hop
    return None


def answer_model(result: CascadeResult) -> str:
    """The model that answered, as its provider named it."""
    hop = answer_hop(result)
    return hop.model if hop is not None else result.tier.model


def usage(result: CascadeResult) -> dict[str, int]:
    """The answering call's tokens (the whole cascade's cost is x-tierroute-cost-usd)."""
    hop = answer_hop(result)
    if hop is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": hop.input_tokens,
        "output_tokens": hop.output_tokens,
        "cache_creation_input_tokens": hop.cache_creation_input_tokens,
        "cache_read_input_tokens": hop.cache_read_input_tokens,
    }


def answer_blocks(result: CascadeResult) -> list[dict[str, Any]]:
    """The answer's content blocks as the Messages API returns them (text and tool_use)."""
    out: list[dict[str, Any]] = []
    for block in result.content:
        if block.get("type") == "text" and block.get("text"):
            out.append({"type": "text", "text": str(block["text"])})
        elif block.get("type") == "tool_use":
            out.append(
                {
                    "type": "tool_use",
                    "id": str(block.get("id", "")),
                    "name": str(block.get("name", "")),
                    "input": dict(block.get("input") or {}),
                }
            )
    return out


def message_id(request_id: str) -> str:
    """The Message id of a request (Anthropic's ids start msg_)."""
    return f"msg_{request_id}"


def message_json(result: CascadeResult) -> dict[str, Any]:
    """A cascade result as the Messages API's Message object."""
    return {
        "id": message_id(result.request_id),
        "type": "message",
        "role": "assistant",
        "model": answer_model(result),
        "content": answer_blocks(result),
        "stop_reason": result.stop_reason or "end_turn",
        "stop_sequence": None,
        "usage": usage(result),
    }


def tierroute_headers(
    result: CascadeResult, strategy: str | None, request_id: str
) -> dict[str, str]:
    """The x-tierroute-* headers of an answered request."""
    decided = result.decision.strategy if result.decision is not None else "self_routing"
    return {
        "x-tierroute-tier": result.tier.name,
        "x-tierroute-strategy": strategy or decided,
        "x-tierroute-cost-usd": f"{result.total_cost_usd:.8f}",
        "x-tierroute-judge-status": result.judge_status,
        "x-tierroute-request-id": request_id,
        "request-id": request_id,
    }
