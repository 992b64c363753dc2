"""The one Protocol every model provider implements, and the values it exchanges.

Providers do not import grpc and do not retry: the cascade owns retries, so that one
deadline and one attempt budget cover every call of a request. Providers translate their
library's errors into `tierroute.errors.ProviderError` subclasses at this edge.

Content that routing and judges never read (images, documents, tool calls and results,
cache_control marks) travels as Messages API JSON blocks (`Block`), unchanged, from the
caller to the provider and, for tool calls, back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

# One Messages API content block as its JSON object, e.g. {"type": "image", "source": ...}.
Block: TypeAlias = Mapping[str, Any]

_WORD = re.compile(r"\S+")
# A UTF-16 surrogate code point: never valid alone in a str that is to be encoded.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with each lone UTF-16 surrogate replaced by U+FFFD (a provider's JSON can
    carry one, as `"\\ud83d"`, and neither protobuf nor UTF-8 can encode it).

    A high and a low surrogate side by side become the character they encode. Text without
    surrogates, the common case, is returned as it is after one scan.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_json(value: Any) -> Any:
    """A JSON value (a tool call's input, a content block) with every string `clean_text`-ed."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(key): clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value


def estimate_tokens(text: str) -> int:
    """Token estimate of a text: the larger of words x 1.3 and characters / 4.

    Words x 1.3 is the project's rough rule; characters / 4 keeps dense text without
    spaces (code, JSON, formulas) from counting as a handful of words. Both grow with
    the text, so a shorter prompt always costs less.
    """
    if not text:
        return 0
    return max(math.ceil(len(_WORD.findall(text)) * 1.3), math.ceil(len(text) / 4))


def prompt_text(system: str, texts: Iterable[str], tools: Iterable[Mapping[str, Any]]) -> str:
    """Everything a model reads, for token counting: the system prompt, the turns' text and
    each tool's schema as sent. The replay backend counts a request's input this way."""
    parts = [system, *texts]
    parts.extend(json.dumps(dict(tool), sort_keys=True) for tool in tools)
    return "\n".join(p for p in parts if p)


def prompt_tokens(body: Mapping[str, Any], messages: Sequence[Message], system: str | None) -> int:
    """Estimated input tokens of the request `body` (from `message_body`): what a provider
    bills for reading the prompt, even when the call is cancelled before it answers."""
    return estimate_tokens(
        prompt_text(system or "", (m.content for m in messages), body.get("tools", ()))
    )


@dataclass(frozen=True)
class Message:
    """One conversation turn sent to a model.

    `content` is the turn's text: what routing, the judge and the replay backend read.
    `blocks`, when set, is what the provider is sent instead: the turn's content blocks as
    the caller gave them (text, image, document, tool_use, tool_result, cache_control).
    """

    role: Literal["user", "assistant"]
    content: str
    blocks: tuple[Block, ...] = ()

    def wire(self) -> str | list[dict[str, Any]]:
        """The Messages API `content` of this turn."""
        if self.blocks:
            return [dict(block) for block in self.blocks]
        return self.content


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model is asked to call, for structured output (the judge's verdict)."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class AnswerParams:
    """The caller's Messages API parameters of an answer call, passed through unchanged.

    None and empty values are left out of the request, so the provider's defaults apply.
    `system` (text blocks, possibly with cache_control) replaces the plain system string
    when set. Judge calls never carry these: they have their own prompt and tool.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()
    user_id: str = ""
    tools: tuple[Block, ...] = ()
    tool_choice: Block | None = None
    system: tuple[Block, ...] = ()


@dataclass(frozen=True)
class Completion:
    """What a provider returns for one call."""

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str
    latency_s: float
    model: str
    # The requested tool call's input, when a tool was requested and the model called it.
    tool_input: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The reply's content blocks as the provider returned them (text and tool_use).
    content: tuple[Block, ...] = ()
    # Prompt-cache usage, billed apart from `input_tokens` (which excludes both).
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def tool_calls(self) -> tuple[Block, ...]:
        """The reply's tool_use blocks: the model asks the caller to run a tool."""
        return tuple(block for block in self.content if block.get("type") == "tool_use")


@dataclass(frozen=True)
class TextDelta:
    """A piece of an answer's text, as it streams."""

    text: str


# What a provider's stream yields: text as it arrives, then the whole completion, last.
StreamItem: TypeAlias = TextDelta | Completion


class Provider(Protocol):
    """Completes a conversation with one model, whole or streamed.

    The text it hands back (deltas, completions, blocks, tool input) is valid Unicode: an
    implementation passes upstream text through `clean_text` / `clean_json` where it enters.
    """

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
        params: AnswerParams | None = None,
    ) -> Completion:
        """Call `model` once; raise a ProviderError subclass on failure, never retry."""
        ...

    def stream(
        self,
        *,
        model: str,
        messages: list[Message],
        max_tokens: int,
        timeout_s: float,
        system: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: AnswerParams | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Call `model` once, streaming: text deltas as they arrive, then the Completion.

        A ProviderError may be raised at any point, also after text has arrived; closing
        the iterator (or cancelling its consumer) ends the call upstream.
        """
        ...

    async def count_tokens(
        self,
        *,
        model: str,
        messages: list[Message],
        timeout_s: float,
        system: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: AnswerParams | None = None,
    ) -> int:
        """The input tokens `model` reads for this request, as its provider counts them
        (Anthropic's count_tokens); a ProviderError subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def message_body(
    *,
    model: str,
    messages: list[Message],
    max_tokens: int,
    system: str | None = None,
    tool: ToolSpec | None = None,
    params: AnswerParams | None = None,
) -> dict[str, Any]:
    """The Messages API request body for one call (without `stream`)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": m.role, "content": m.wire()} for m in messages],
    }
    if params is not None and params.system:
        body["system"] = [dict(block) for block in params.system]
    elif system is not None:
        body["system"] = system
    if tool is not None:
        body["tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": dict(tool.input_schema),
            }
        ]
        # `auto`, not a forced tool: a forced call is prefilled, so the model could not write
        # its working before the verdict (prompts.JUDGE_SYSTEM asks for it). A reply without
        # the tool call parses as no verdict: judge unavailable, never a pass.
        body["tool_choice"] = {"type": "auto"}
    elif params is not None:
        _apply(body, params)
    return body


# What Anthropic's count_tokens takes of a Messages API request.
_COUNTED = ("model", "messages", "system", "tools", "tool_choice")


def count_body(
    *,
    model: str,
    messages: list[Message],
    system: str | None = None,
    params: AnswerParams | None = None,
) -> dict[str, Any]:
    """The count_tokens request body for an answer call's request (no sampling, no limit)."""
    body = message_body(model=model, messages=messages, max_tokens=1, system=system, params=params)
    return {key: body[key] for key in _COUNTED if key in body}


def _apply(body: dict[str, Any], params: AnswerParams) -> None:
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(params, name)
        if value is not None:
            body[name] = value
    if params.stop_sequences:
        body["stop_sequences"] = list(params.stop_sequences)
    if params.user_id:
        body["metadata"] = {"user_id": params.user_id}
    if params.tools:
        body["tools"] = [dict(t) for t in params.tools]
        if params.tool_choice is not None:
            body["tool_choice"] = dict(params.tool_choice)
