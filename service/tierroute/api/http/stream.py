"""A streamed Cascade as the Messages API's server-sent events.

The events are Anthropic's: `message_start`, a `ping`, per content block
`content_block_start`, its deltas (`text_delta`; one `input_json_delta` for a tool call) and
`content_block_stop`, then `message_delta` (stop reason and the answering call's usage) and
`message_stop`; `ping` while nothing else is sent for a while, and `error` when the request
fails after the stream began. The stream begins at the Cascade's commit point, with the
first text that no later step can withdraw (or with the whole answer, when it was judged):
only then is the answering model known, and a request that fails before it gets an ordinary
HTTP error instead of a stream. `message_delta` also carries a `tierroute` object (the
answering tier, the strategy, the cost of every call and the judge's status), which clients
that do not know it ignore.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tierroute.api.http.errors import HttpError
from tierroute.api.http.messages import answer_blocks, message_id, usage
from tierroute.cascade import CascadeResult

PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def sse(name: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event on the wire."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_event(error: HttpError) -> bytes:
    """The `error` event of a stream that failed after it began."""
    return sse("error", error.body())


class MessageEvents:
    """Writes one streamed Message's events, opening and closing its blocks in order."""

    def __init__(self, request_id: str, model: str) -> None:
        self._request_id = request_id
        self._model = model
        self._index = -1
        self._text_open = False

    def start(self) -> bytes:
        """`message_start`, then a `ping` as Anthropic sends one."""
        message: dict[str, Any] = {
            "id": message_id(self._request_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The answering call's tokens are known at its end: message_delta has them.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message}) + PING

    def text(self, piece: str) -> bytes:
        """A piece of the answer's text, in the open text block (opened on first use)."""
        out = b""
        if not self._text_open:
            self._index += 1
            self._text_open = True
            out += sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        delta = {"type": "text_delta", "text": piece}
        return out + sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )

    def _close_text(self) -> bytes:
        if not self._text_open:
            return b""
        self._text_open = False
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def finish(self, result: CascadeResult, tierroute: Mapping[str, Any]) -> bytes:
        """The answer's tool calls, `message_delta` and `message_stop`."""
        out = self._close_text()
        for block in answer_blocks(result):
            if block["type"] != "tool_use":
                continue
            self._index += 1
            start = {**block, "input": {}}
            out += sse(
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": start},
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            out += sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
            out += sse("content_block_stop", {"type": "content_block_stop", "index": self._index})
        out += sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": result.stop_reason or "end_turn", "stop_sequence": None},
                "usage": usage(result),
                "tierroute": dict(tierroute),
            },
        )
        return out + sse("message_stop", {"type": "message_stop"})
