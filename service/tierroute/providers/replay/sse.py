"""The replay backend's streaming: a Messages API reply as its server-sent events, timed.

A streamed reply is the same message a unary call gets, told as Anthropic tells it:
`message_start`, then per content block `content_block_start`, its deltas
(`text_delta`, or one `input_json_delta` for a tool call) and `content_block_stop`, then
`message_delta` (stop reason and output tokens) and `message_stop`. Each event carries
the wait before it: the latency model's time to first token before `message_start`, then
each delta's share of the output tokens at the tier's token rate, so the whole stream
takes as long as the unary reply. A `midstream` fault cuts it halfway with an `error`
event, as an upstream failure after HTTP 200 would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Text is streamed a few words at a time, roughly as models emit it.
_CHUNK = re.compile(r"(?:\S+\s*){1,4}|\s+")


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event and the seconds to wait before sending it."""

    name: str
    data: Mapping[str, Any]
    delay_s: float = 0.0

    def encode(self) -> bytes:
        """The event on the wire."""
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


def stream_events(
    message: Mapping[str, Any], first_token_s: float, per_token_s: float
) -> list[SseEvent]:
    """The events of `message` streamed at `per_token_s` after `first_token_s`."""
    content = list(message.get("content") or [])
    usage = dict(message.get("usage") or {})
    output_tokens = int(usage.get("output_tokens", 0))
    pieces = [_pieces(block) for block in content]
    chars = sum(len(p) for block_pieces in pieces for p in block_pieces) or 1
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [SseEvent("message_start", {"type": "message_start", "message": start}, first_token_s)]
    for index, (block, block_pieces) in enumerate(zip(content, pieces, strict=True)):
        events.append(
            SseEvent(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _empty(block)},
            )
        )
        for piece in block_pieces:
            delay = output_tokens * len(piece) / chars * per_token_s
            events.append(SseEvent("content_block_delta", _delta(block, index, piece), delay))
        events.append(
            SseEvent("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    events.append(
        SseEvent(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message.get("stop_reason"),
                    "stop_sequence": message.get("stop_sequence"),
                },
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(SseEvent("message_stop", {"type": "message_stop"}))
    return events


def cut_midstream(events: list[SseEvent], error_type: str, message: str) -> list[SseEvent]:
    """`events` up to half of the deltas, then an `error` event in their place."""
    deltas = [i for i, e in enumerate(events) if e.name == "content_block_delta"]
    cut = deltas[len(deltas) // 2] if deltas else 1
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    return [*events[:cut], SseEvent("error", error)]


def _pieces(block: Mapping[str, Any]) -> list[str]:
    if block.get("type") == "text":
        return _CHUNK.findall(str(block.get("text", ""))) or [""]
    if block.get("type") == "tool_use":
        return [json.dumps(block.get("input", {}))]
    return []


def _empty(block: Mapping[str, Any]) -> dict[str, Any]:
    if block.get("type") == "text":
        return {"type": "text", "text": ""}
    if block.get("type") == "tool_use":
        return {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
    return dict(block)


def _delta(block: Mapping[str, Any], index: int, piece: str) -> dict[str, Any]:
    if block.get("type") == "tool_use":
        delta = {"type": "input_json_delta", "partial_json": piece}
    else:
        delta = {"type": "text_delta", "text": piece}
    return {"type": "content_block_delta", "index": index, "delta": delta}
