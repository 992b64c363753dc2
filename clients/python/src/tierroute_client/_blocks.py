"""Messages API content blocks and tools as Python dicts, to and from the contract's messages.

A turn's content, a tool and a tool choice are written the way the Anthropic SDK writes
them (`{"type": "image", "source": {"type": "base64", ...}}`), so code that builds Messages
API requests can call tierroute with the same values. The server checks every rule; this
module only maps shapes and says which key it could not read.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tierroute_client.v1 import tierroute_pb2 as pb

Block = Mapping[str, Any]

_TOOL_CHOICES: dict[str, pb.ToolChoiceType.ValueType] = {
    "auto": pb.TOOL_CHOICE_TYPE_AUTO,
    "any": pb.TOOL_CHOICE_TYPE_ANY,
    "tool": pb.TOOL_CHOICE_TYPE_TOOL,
    "none": pb.TOOL_CHOICE_TYPE_NONE,
}


def _cache_control(block: Block) -> pb.CacheControl | None:
    control = block.get("cache_control")
    if control is None:
        return None
    return pb.CacheControl(type=str(control.get("type", "")), ttl=str(control.get("ttl", "")))


def _source(source: Mapping[str, Any]) -> pb.MediaSource:
    kind = source.get("type")
    if kind == "url":
        return pb.MediaSource(url=str(source["url"]))
    if kind == "base64":
        data = base64.b64decode(str(source["data"]))
        return pb.MediaSource(media_type=str(source["media_type"]), data=data)
    if kind == "text":
        text = str(source["data"]).encode("utf-8")
        return pb.MediaSource(media_type=str(source.get("media_type", "text/plain")), data=text)
    raise ValueError(f"unknown source type {kind!r}; expected base64, url or text")


def block_to_pb(block: Block) -> pb.ContentBlock:
    """One Messages API block (a dict) as the contract's ContentBlock."""
    kind = block.get("type")
    message = pb.ContentBlock()
    if kind == "text":
        message.text.text = str(block["text"])
    elif kind == "image":
        message.image.source.CopyFrom(_source(block["source"]))
    elif kind == "document":
        message.document.source.CopyFrom(_source(block["source"]))
        message.document.title = str(block.get("title", ""))
        message.document.context = str(block.get("context", ""))
        message.document.citations = bool((block.get("citations") or {}).get("enabled"))
    elif kind == "tool_use":
        message.tool_use.id = str(block["id"])
        message.tool_use.name = str(block["name"])
        message.tool_use.input_json = json.dumps(block.get("input", {}))
    elif kind == "tool_result":
        message.tool_result.tool_use_id = str(block["tool_use_id"])
        content = block.get("content") or []
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        message.tool_result.content.extend(block_to_pb(b) for b in content)
        message.tool_result.is_error = bool(block.get("is_error", False))
    else:
        raise ValueError(
            f"unknown block type {kind!r}; expected text, image, document, tool_use or tool_result"
        )
    control = _cache_control(block)
    if control is not None:
        message.cache_control.CopyFrom(control)
    return message


def block_from_pb(block: pb.ContentBlock) -> dict[str, Any]:
    """An answer's ContentBlock (text or tool_use) as a Messages API dict."""
    kind = block.WhichOneof("block")
    if kind == "tool_use":
        return {
            "type": "tool_use",
            "id": block.tool_use.id,
            "name": block.tool_use.name,
            "input": json.loads(block.tool_use.input_json or "{}"),
        }
    if kind == "text":
        return {"type": "text", "text": block.text.text}
    # The server sends text and tool_use only; anything newer comes through by its name.
    return {"type": str(kind)}


def tool_to_pb(tool: Mapping[str, Any]) -> pb.Tool:
    """A Messages API tool definition (name, description, input_schema) as the contract's."""
    message = pb.Tool(
        name=str(tool["name"]),
        description=str(tool.get("description", "")),
        input_schema_json=json.dumps(tool.get("input_schema", {"type": "object"})),
    )
    control = _cache_control(tool)
    if control is not None:
        message.cache_control.CopyFrom(control)
    return message


def tool_choice_to_pb(choice: str | Mapping[str, Any]) -> pb.ToolChoice:
    """A tool choice: "auto", "any", "none", a tool's name, or the Messages API's dict."""
    if isinstance(choice, str):
        choice = {"type": choice} if choice in _TOOL_CHOICES else {"type": "tool", "name": choice}
    kind = str(choice.get("type", ""))
    if kind not in _TOOL_CHOICES:
        raise ValueError(f"unknown tool choice {kind!r}; expected one of {sorted(_TOOL_CHOICES)}")
    return pb.ToolChoice(
        type=_TOOL_CHOICES[kind],
        name=str(choice.get("name", "")),
        disable_parallel_tool_use=bool(choice.get("disable_parallel_tool_use", False)),
    )


def content_to_pb(content: str | Sequence[Block]) -> tuple[str, list[pb.ContentBlock]]:
    """A turn's content: (text, no blocks) for a string, ("", blocks) for a list of blocks."""
    if isinstance(content, str):
        return content, []
    return "", [block_to_pb(b) for b in content]
