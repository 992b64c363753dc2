"""The Messages API surface of a request: content blocks, tools, tool choice and sampling.

Protobuf blocks become the Messages API's JSON blocks here, checked against the input
limits, and travel unchanged to the provider; an answer's blocks come back the same way.
Every refusal is an `InvalidRequest` naming the field and the limit.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tierroute.api import jsonbody
from tierroute.errors import InvalidRequest
from tierroute.providers import AnswerParams, Block, prompts
from tierroute.settings import LimitsConfig
from tierroute.v1 import tierroute_pb2 as pb

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
DOCUMENT_TYPES = ("application/pdf", "text/plain")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TTLS = ("", "5m", "1h")
# Which blocks each role may send (the Messages API's rules).
_ALLOWED: Mapping[str, frozenset[str]] = {
    "user": frozenset({"text", "image", "document", "tool_result"}),
    "assistant": frozenset({"text", "tool_use"}),
    "system": frozenset({"text"}),
}
_TOOL_CHOICE: Mapping[int, str | None] = {
    pb.TOOL_CHOICE_TYPE_UNSPECIFIED: None,
    pb.TOOL_CHOICE_TYPE_AUTO: "auto",
    pb.TOOL_CHOICE_TYPE_ANY: "any",
    pb.TOOL_CHOICE_TYPE_TOOL: "tool",
    pb.TOOL_CHOICE_TYPE_NONE: "none",
}


@dataclass
class Breakpoints:
    """Counts the cache_control marks of one request against the limit."""

    limit: int
    count: int = 0

    def mark(self, control: pb.CacheControl, where: str) -> dict[str, str]:
        """The JSON of one cache_control mark; InvalidRequest past the limit."""
        if control.type not in ("", "ephemeral"):
            raise InvalidRequest(f"{where}.cache_control.type must be 'ephemeral'")
        if control.ttl not in _TTLS:
            raise InvalidRequest(f"{where}.cache_control.ttl must be '5m' or '1h'")
        self.count += 1
        if self.count > self.limit:
            raise InvalidRequest(
                f"the request has more than {self.limit} cache_control marks; the limit is "
                f"{self.limit}"
            )
        mark = {"type": "ephemeral"}
        if control.ttl:
            mark["ttl"] = control.ttl
        return mark


@dataclass(frozen=True)
class Turn:
    """One converted turn: its own text, its blocks (empty for plain content), and the
    text its tool results bring."""

    role: Literal["system", "user", "assistant"]
    text: str
    blocks: tuple[Block, ...] = ()
    tool_results: bool = False
    results_text: str = ""


def turn(
    message: pb.ChatMessage,
    role: Literal["system", "user", "assistant"],
    where: str,
    limits: LimitsConfig,
    breakpoints: Breakpoints,
) -> Turn:
    """A ChatMessage as text plus Messages API blocks; InvalidRequest when it breaks a rule."""
    if not message.blocks:
        if not message.content.strip():
            raise InvalidRequest(f"{where} is empty")
        return Turn(role, message.content)
    if message.content:
        raise InvalidRequest(f"{where}: set content or blocks, not both")
    if len(message.blocks) > limits.max_blocks_per_message:
        raise InvalidRequest(
            f"{where} has {len(message.blocks)} blocks; the limit is "
            f"{limits.max_blocks_per_message}"
        )
    blocks = tuple(
        block_json(b, f"{where}.blocks[{i}]", _ALLOWED[role], breakpoints)
        for i, b in enumerate(message.blocks)
    )
    if role == "user":
        kinds = [b["type"] for b in blocks]
        first_other = next((i for i, k in enumerate(kinds) if k != "tool_result"), len(kinds))
        if "tool_result" in kinds[first_other:]:
            raise InvalidRequest(f"{where}: tool_result blocks must come before other blocks")
    results = [b for b in blocks if b["type"] == "tool_result"]
    return Turn(
        role,
        "\n".join(str(b["text"]) for b in blocks if b["type"] == "text"),
        blocks,
        tool_results=bool(results),
        results_text="\n".join(
            str(inner["text"])
            for result in results
            for inner in result["content"]
            if inner["type"] == "text"
        ),
    )


def block_json(
    block: pb.ContentBlock, where: str, allowed: frozenset[str], breakpoints: Breakpoints
) -> dict[str, Any]:
    """One protobuf block as the Messages API's JSON block."""
    kind = block.WhichOneof("block")
    if kind is None:
        raise InvalidRequest(f"{where} sets no block (text, image, document, tool_use, ...)")
    if kind not in allowed:
        raise InvalidRequest(f"{where}: a {kind} block is not allowed in this turn")
    out: dict[str, Any]
    if kind == "text":
        if not block.text.text.strip():
            raise InvalidRequest(f"{where}.text is empty")
        out = {"type": "text", "text": block.text.text}
    elif kind == "image":
        out = {"type": "image", "source": _source(block.image.source, IMAGE_TYPES, where)}
    elif kind == "document":
        out = _document(block.document, where)
    elif kind == "tool_use":
        out = _tool_use(block.tool_use, where)
    else:
        out = _tool_result(block.tool_result, where, breakpoints)
    if block.HasField("cache_control"):
        out["cache_control"] = breakpoints.mark(block.cache_control, where)
    return out


def _source(source: pb.MediaSource, types: tuple[str, ...], where: str) -> dict[str, Any]:
    which = source.WhichOneof("source")
    if which == "url":
        if not source.url.startswith(("https://", "http://")):
            raise InvalidRequest(f"{where}.source.url must be an http or https URL")
        return {"type": "url", "url": source.url}
    if which is None or not source.data:
        raise InvalidRequest(f"{where}.source needs data or a url")
    if source.media_type not in types:
        raise InvalidRequest(
            f"{where}.source.media_type {source.media_type[:64]!r} is not one of {list(types)}"
        )
    if source.media_type == "text/plain":
        try:
            text = source.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{where}.source: text/plain data must be UTF-8") from exc
        return {"type": "text", "media_type": "text/plain", "data": text}
    encoded = base64.b64encode(source.data).decode("ascii")
    return {"type": "base64", "media_type": source.media_type, "data": encoded}


def _document(document: pb.DocumentBlock, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "document",
        "source": _source(document.source, DOCUMENT_TYPES, where),
    }
    if document.title:
        out["title"] = document.title
    if document.context:
        out["context"] = document.context
    if document.citations:
        out["citations"] = {"enabled": True}
    return out


def _json_object(text: str, where: str) -> dict[str, Any]:
    # Within the bounds of a request body: a string can nest as deep as any body.
    return jsonbody.decode_embedded(text, where)


def _tool_use(tool_use: pb.ToolUseBlock, where: str) -> dict[str, Any]:
    if not tool_use.id or not _TOOL_NAME.match(tool_use.name):
        raise InvalidRequest(f"{where}: a tool_use block needs an id and a valid tool name")
    return {
        "type": "tool_use",
        "id": tool_use.id,
        "name": tool_use.name,
        "input": _json_object(tool_use.input_json, f"{where}.input_json"),
    }


def _tool_result(
    result: pb.ToolResultBlock, where: str, breakpoints: Breakpoints
) -> dict[str, Any]:
    if not result.tool_use_id:
        raise InvalidRequest(f"{where}: a tool_result block needs tool_use_id")
    allowed = frozenset({"text", "image", "document"})
    out: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": result.tool_use_id,
        "content": [
            block_json(b, f"{where}.content[{i}]", allowed, breakpoints)
            for i, b in enumerate(result.content)
        ],
    }
    if result.is_error:
        out["is_error"] = True
    return out


def tools_json(
    tools: Sequence[pb.Tool], limits: LimitsConfig, breakpoints: Breakpoints
) -> tuple[dict[str, Any], ...]:
    """The request's tools as Messages API tool definitions."""
    if len(tools) > limits.max_tools:
        raise InvalidRequest(f"tools has {len(tools)} entries; the limit is {limits.max_tools}")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not _TOOL_NAME.match(tool.name):
            raise InvalidRequest(f"{where}.name must be 1-64 letters, digits, '_' or '-'")
        if tool.name == prompts.JUDGE_TOOL.name:
            raise InvalidRequest(f"{where}.name {tool.name!r} is reserved for the judge")
        if tool.name in names:
            raise InvalidRequest(f"{where}.name {tool.name!r} is given twice")
        names.add(tool.name)
        if len(tool.input_schema_json) > limits.max_tool_schema_chars:
            raise InvalidRequest(
                f"{where}.input_schema_json has {len(tool.input_schema_json)} characters; "
                f"the limit is {limits.max_tool_schema_chars}"
            )
        schema = _json_object(tool.input_schema_json, f"{where}.input_schema_json")
        if schema.get("type", "object") != "object":
            raise InvalidRequest(f"{where}.input_schema_json must describe an object")
        definition: dict[str, Any] = {
            "name": tool.name,
            "input_schema": {"type": "object", **schema},
        }
        if tool.description:
            definition["description"] = tool.description
        if tool.HasField("cache_control"):
            definition["cache_control"] = breakpoints.mark(tool.cache_control, where)
        out.append(definition)
    return tuple(out)


def tool_choice_json(
    choice: pb.ToolChoice, tools: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The Messages API tool_choice, or None for the provider's default."""
    kind = _TOOL_CHOICE.get(choice.type)
    if choice.type not in _TOOL_CHOICE:
        raise InvalidRequest(f"tool_choice.type {choice.type} is not a known value")
    if kind is None:
        if choice.name or choice.disable_parallel_tool_use:
            raise InvalidRequest("tool_choice needs a type")
        return None
    if not tools:
        raise InvalidRequest("tool_choice needs tools")
    out: dict[str, Any] = {"type": kind}
    if kind == "tool":
        if choice.name not in {t["name"] for t in tools}:
            raise InvalidRequest(
                f"tool_choice.name {choice.name[:64]!r} names none of the request's tools"
            )
        out["name"] = choice.name
    elif choice.name:
        raise InvalidRequest("tool_choice.name is only for TOOL_CHOICE_TYPE_TOOL")
    if choice.disable_parallel_tool_use:
        if kind == "none":
            raise InvalidRequest("tool_choice none cannot disable parallel tool use")
        out["disable_parallel_tool_use"] = True
    return out


@dataclass(frozen=True)
class Sampling:
    """The request's sampling and stop parameters, checked."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = field(default_factory=tuple)


def sampling(request: pb.CascadeRequest, limits: LimitsConfig) -> Sampling:
    """Temperature, top_p, top_k and stop sequences, each within its range."""
    temperature = request.temperature if request.HasField("temperature") else None
    top_p = request.top_p if request.HasField("top_p") else None
    top_k = request.top_k if request.HasField("top_k") else None
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 1):
        raise InvalidRequest("temperature must be within [0, 1]")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidRequest("top_p must be within (0, 1]")
    if top_k is not None and top_k < 1:
        raise InvalidRequest("top_k must be at least 1")
    stops = tuple(request.stop_sequences)
    if len(stops) > limits.max_stop_sequences:
        raise InvalidRequest(
            f"stop_sequences has {len(stops)} entries; the limit is {limits.max_stop_sequences}"
        )
    for i, stop in enumerate(stops):
        if not stop.strip():
            raise InvalidRequest(f"stop_sequences[{i}] is blank")
        if len(stop) > limits.max_stop_sequence_chars:
            raise InvalidRequest(
                f"stop_sequences[{i}] has {len(stop)} characters; the limit is "
                f"{limits.max_stop_sequence_chars}"
            )
    return Sampling(temperature, top_p, top_k, stops)


def answer_params(
    request: pb.CascadeRequest,
    limits: LimitsConfig,
    system: Sequence[Block],
    tools: tuple[dict[str, Any], ...],
) -> AnswerParams:
    """The caller's Messages API parameters for every answer call of the request
    (`tools` already converted by `tools_json`)."""
    chosen = sampling(request, limits)
    if len(request.metadata_user_id) > limits.max_id_chars:
        raise InvalidRequest(
            f"metadata_user_id has {len(request.metadata_user_id)} characters; "
            f"the limit is {limits.max_id_chars}"
        )
    return AnswerParams(
        temperature=chosen.temperature,
        top_p=chosen.top_p,
        top_k=chosen.top_k,
        stop_sequences=chosen.stop_sequences,
        user_id=request.metadata_user_id,
        tools=tools,
        tool_choice=tool_choice_json(request.tool_choice, tools),
        system=tuple(system),
    )


def block_pb(block: Block) -> pb.ContentBlock:
    """An answer's JSON block (text or tool_use) as the proto's ContentBlock."""
    kind = block.get("type")
    if kind == "tool_use":
        return pb.ContentBlock(
            tool_use=pb.ToolUseBlock(
                id=str(block.get("id", "")),
                name=str(block.get("name", "")),
                input_json=json.dumps(block.get("input", {}), sort_keys=True),
            )
        )
    return pb.ContentBlock(text=pb.TextBlock(text=str(block.get("text", ""))))


def is_answer_block(block: Block) -> bool:
    """Whether the response carries this block (text and tool_use; not thinking etc.)."""
    return block.get("type") in ("text", "tool_use")
