"""The one Protocol every model provider implements, and the values it exchanges.

Providers do not import grpc and do not retry: the cascade owns retries, so that one
deadline and one attempt budget cover every call of a request. Providers translate their
library's errors into `tierroute.errors.ProviderError` subclasses at this edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
