"""The replay backend's prompt cache: cache_control marks read and write simulated entries.

A request's prompt is read in the Messages API's order (tools, then system, then
messages, block by block); each block with `cache_control` is a breakpoint, and the
prefix up to it is one cache entry per model. The longest prefix already cached is read
(`cache_read_input_tokens`); the prefix up to the last breakpoint beyond it is written
(`cache_creation_input_tokens`); the rest is plain input. Token counts are the replay's
estimate; entries live as long as the server, bounded by a least-recently-used limit,
so a switch of model (tier) finds nothing cached, as with the real API.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tierroute.providers.base import estimate_tokens


@dataclass(frozen=True)
class CacheUsage:
    """How one request's input tokens split: plain, written to the cache, read from it."""

    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class PromptCache:
    """Which prompt prefixes each model has cached. Thread-safe."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def usage(self, payload: Mapping[str, Any], model: str, input_tokens: int) -> CacheUsage:
        """Split `input_tokens` of a request by its cache breakpoints, and store them."""
        breakpoints = list(_breakpoints(payload))
        if not breakpoints:
            return CacheUsage(input_tokens)
        with self._lock:
            read = 0
            for digest, tokens in breakpoints:
                if (model, digest) in self._entries:
                    self._entries.move_to_end((model, digest))
                    read = max(read, tokens)
            written = max(0, breakpoints[-1][1] - read)
            for digest, tokens in breakpoints:
                self._entries[(model, digest)] = tokens
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        read = min(read, input_tokens)
        written = min(written, input_tokens - read)
        return CacheUsage(input_tokens - read - written, written, read)


def _breakpoints(payload: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """(prefix digest, prefix tokens) at each block that carries cache_control."""
    digest = hashlib.sha256()
    tokens = 0
    for unit in _units(payload):
        marked = isinstance(unit, dict) and "cache_control" in unit
        bare = {k: v for k, v in unit.items() if k != "cache_control"} if marked else unit
        digest.update(json.dumps(bare, sort_keys=True).encode())
        tokens += estimate_tokens(_text(bare))
        if marked:
            yield digest.hexdigest(), tokens


def _units(payload: Mapping[str, Any]) -> Iterator[Any]:
    yield from payload.get("tools") or ()
    system = payload.get("system")
    if isinstance(system, list):
        yield from system
    elif system:
        yield {"type": "text", "text": system}
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                yield {"role": message.get("role"), **block} if isinstance(block, dict) else block
        else:
            yield {"role": message.get("role"), "type": "text", "text": content}


def _text(unit: Any) -> str:
    """The text of a prompt unit the token estimate counts (images count nothing here)."""
    if not isinstance(unit, dict):
        return str(unit)
    kind = unit.get("type")
    if kind == "text":
        text = str(unit.get("text", ""))
    elif kind == "tool_result":
        inner = unit.get("content")
        text = inner if isinstance(inner, str) else "\n".join(_text(b) for b in inner or ())
    elif kind == "document":
        source = unit.get("source") or {}
        text = str(source.get("data", "")) if source.get("type") == "text" else ""
    elif kind == "image":
        text = ""
    else:
        text = json.dumps(unit, sort_keys=True)
    return text
