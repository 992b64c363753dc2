"""OpenAI's chat-completions format on the wire: whole, as errors, and as chunks.

A stream is OpenAI's server-sent `chat.completion.chunk` objects: the first carries the
role, then one per piece of text, one per tool call, one with the finish reason (and
tierroute's own `tierroute` object, which the SDKs ignore), with `stream_options.
include_usage` one more with no choices and the usage, then `data: [DONE]`. A quiet stream
gets SSE comments (`: ping`), which clients skip; a stream that fails after it began ends
with OpenAI's error chunk (`data: {"error": {...}}`) and no `[DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tierroute.api.http.errors import HttpError
from tierroute.api.http.openai import (
    completion_id,
    completion_json,
    finish_reason,
    openai_error,
    tool_calls,
    usage,
)
from tierroute.api.http.wire import EventWriter
from tierroute.cascade import CascadeResult

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"


def data(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event with no name, as OpenAI sends them."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class ChunkWriter:
    """Writes one streamed ChatCompletion's chunks."""

    def __init__(self, request_id: str, model: str, *, include_usage: bool) -> None:
        self._id = completion_id(request_id)
        self._model = model
        self._created = int(time.time())
        self._include_usage = include_usage

    def _chunk(self, delta: Mapping[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": dict(delta), "finish_reason": finish, "logprobs": None}
            ],
            **extra,
        }
        if self._include_usage:
            chunk.setdefault("usage", None)
        return data(chunk)

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, piece: str) -> bytes:
        return self._chunk({"content": piece})

    def ping(self) -> bytes:
        return PING

    def finish(self, result: CascadeResult, tierroute: Mapping[str, Any]) -> bytes:
        out = b""
        for index, call in enumerate(tool_calls(result)):
            out += self._chunk({"tool_calls": [{"index": index, **call}]})
        out += self._chunk({}, finish_reason(result), tierroute=dict(tierroute))
        if self._include_usage:
            out += data(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage(result),
                }
            )
        return out + DONE

    def error(self, error: HttpError) -> bytes:
        return data(openai_error(error)[1])


class ChatWire:
    """OpenAI's chat completions: a ChatCompletion, OpenAI's error JSON, its chunks."""

    def __init__(self, *, include_usage: bool = False) -> None:
        self._include_usage = include_usage

    def body(self, result: CascadeResult) -> dict[str, Any]:
        return completion_json(result)

    def error(self, error: HttpError) -> tuple[int, dict[str, Any]]:
        return openai_error(error)

    def events(self, request_id: str, model: str) -> EventWriter:
        return ChunkWriter(request_id, model, include_usage=self._include_usage)
