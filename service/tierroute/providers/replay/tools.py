"""The replay backend's tool calls: when a replayed model calls a tool, and with what input.

Recorded answers hold no tool calls, so the replay follows a fixed, documented rule: a
request that offers tools (other than the judge's) and whose last user turn brings no tool
result gets one call of a tool before its answer; once the result is back, the recorded
(or synthetic) answer follows. `tool_choice` `none` never calls; `tool` calls the named
tool; `any` and `tool` call without a preamble, `auto` says one sentence first, as models
tend to. The input fills each required property from the schema with a stand-in value
(strings get the question's beginning), so it validates against simple schemas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

_DEFAULTS: Mapping[str, Any] = {
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def chosen_tool(
    tools: Sequence[Mapping[str, Any]], tool_choice: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The tool a replayed model calls, or None when the choice forbids a call."""
    kind = (tool_choice or {}).get("type", "auto")
    if not tools or kind == "none":
        return None
    if kind == "tool":
        name = (tool_choice or {}).get("name")
        return next((t for t in tools if t.get("name") == name), None)
    return tools[0]


def tool_input(tool: Mapping[str, Any], question: str) -> dict[str, Any]:
    """A stand-in input for `tool`: each required property with a value of its type."""
    schema = tool.get("input_schema") or {}
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    values: dict[str, Any] = {}
    for name in required:
        spec = properties.get(name) or {}
        kind = spec.get("type", "string")
        if isinstance(kind, list):
            kind = kind[0] if kind else "string"
        if spec.get("enum"):
            values[name] = spec["enum"][0]
        elif kind == "string":
            values[name] = question[:200]
        else:
            values[name] = _DEFAULTS.get(kind)
    return values


def tool_use_block(tool: Mapping[str, Any], question: str, model: str) -> dict[str, Any]:
    """The tool_use block of a replayed call; its id is stable for a question and model."""
    digest = hashlib.sha256(f"tool\x00{question}\x00{model}".encode()).hexdigest()[:24]
    return {
        "type": "tool_use",
        "id": f"toolu_{digest}",
        "name": str(tool.get("name", "")),
        "input": tool_input(tool, question),
    }
