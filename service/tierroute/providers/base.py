"""The one Protocol every model provider implements, and the values it exchanges.

Providers do not import grpc and do not retry: the cascade owns retries, so that one
deadline and one attempt budget cover every call of a request. Providers translate their
library's errors into `tierroute.errors.ProviderError` subclasses at this edge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

_WORD = re.compile(r"\S+")


def estimate_tokens(text: str) -> int:
    """Token estimate of a text: the larger of words x 1.3 and characters / 4.

    Words x 1.3 is the project's rough rule; characters / 4 keeps dense text without
    spaces (code, JSON, formulas) from counting as a handful of words. Both grow with
    the text, so a shorter prompt always costs less.
    """
    if not text:
        return 0
    return max(math.ceil(len(_WORD.findall(text)) * 1.3), math.ceil(len(text) / 4))


def prompt_tokens(messages: Sequence[Message], system: str | None, tool: ToolSpec | None) -> int:
    """Estimated input tokens of a call: what a provider bills for reading the prompt, even
    when the call is cancelled before it answers."""
    parts = [system or "", *(m.content for m in messages)]
    if tool is not None:
        parts.append(f"{tool.name} {tool.description} {dict(tool.input_schema)}")
    return estimate_tokens("\n".join(p for p in parts if p))


@dataclass(frozen=True)
class Message:
    """One conversation turn sent to a model."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model is forced to call, for structured output (the judge's verdict)."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class Completion:
    """What a provider returns for one call."""

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str
    latency_s: float
    model: str
    # The forced tool call's input, when a tool was requested and the model called it.
    tool_input: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """Completes a conversation with one model."""

    async def complete(
        self,
        *,
        model: str,
        messages: list[Message],
        max_tokens: int,
        timeout_s: float,
        system: str | None = None,
        tool: ToolSpec | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Completion:
        """Call `model` once; raise a ProviderError subclass on failure, never retry."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
