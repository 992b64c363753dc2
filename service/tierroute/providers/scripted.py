"""Test doubles the cascade's tests inject: a scripted provider and a recording wrapper.

`ScriptedProvider` answers from a script. Each model has two queues of `Reply` objects, one
for answer calls and one for judge calls (a call with a forced tool is a judge call), so
concurrent calls to one model cannot take each other's replies. A reply can hold its call
open on an `asyncio.Event` until a test releases it, which lets tests observe cancellation
without depending on timing.

A streamed call (`stream`) takes its reply from the answer queue and yields the reply's
text as deltas (`Reply.deltas`, else word by word); `Reply.mid_gate` holds it open after
the first delta and `Reply.mid_error` fails it there, as a provider whose stream breaks
after HTTP 200 would.

`RecordingProvider` wraps a real provider (the Anthropic SDK against the replay server) and
can add headers to the calls of one model and role, for example a replay fault that holds
only the speculative answer call open and not the judge call to the same model.

Both record every call with what was sent and how it ended.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tierroute.errors import ProviderError
from tierroute.providers.base import (
    AnswerParams,
    Block,
    Completion,
    Message,
    Provider,
    StreamItem,
    TextDelta,
    ToolSpec,
    clean_json,
    clean_text,
    count_body,
    prompt_tokens,
)

_WORDS = re.compile(r"\S+\s*|\s+")


class ScriptExhausted(AssertionError):
    """The engine made a call the script did not foresee: a failing test, not a provider error."""


@dataclass(frozen=True)
class Reply:
    """One scripted outcome: a completion, or an error to raise, optionally held on a gate."""

    text: str = ""
    tool_input: Mapping[str, Any] | None = None
    input_tokens: int = 100
    output_tokens: int = 20
    stop_reason: str = "end_turn"
    latency_s: float = 0.0
    error: ProviderError | None = None
    # The call waits for this event before answering; an event never set holds it open.
    gate: asyncio.Event | None = None
    # Blocks after the text (tool_use blocks for a tool call).
    blocks: tuple[Block, ...] = ()
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Streaming: the deltas (None: the text word by word); after the first delta the
    # stream waits for `mid_gate` and then fails with `mid_error`, when set.
    deltas: tuple[str, ...] | None = None
    mid_gate: asyncio.Event | None = None
    mid_error: ProviderError | None = None

    @classmethod
    def tool_call(
        cls, name: str, tool_input: Mapping[str, Any], text: str = "", **kwargs: Any
    ) -> Reply:
        """An answer that calls tool `name` (after `text`, if any)."""
        block = {"type": "tool_use", "id": f"toolu_{name}", "name": name, "input": tool_input}
        kwargs.setdefault("stop_reason", "tool_use")
        return cls(text=text, blocks=(block,), **kwargs)

    def completion(self, model: str) -> Completion:
        """The completion this reply makes for a call to `model`.

        Its text and blocks are cleaned of lone surrogates as a real adapter's are.
        """
        text = clean_text(self.text)
        content = ({"type": "text", "text": text},) if text else ()
        return Completion(
            text=text,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            stop_reason=self.stop_reason,
            latency_s=self.latency_s,
            model=model,
            tool_input=None if self.tool_input is None else clean_json(self.tool_input),
            content=(*content, *(clean_json(block) for block in self.blocks)),
            cache_creation_input_tokens=self.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens,
        )

    def chunks(self) -> tuple[str, ...]:
        """The deltas a stream of this reply yields."""
        if self.deltas is not None:
            return self.deltas
        return tuple(_WORDS.findall(self.text))

    @classmethod
    def answer(cls, text: str, **kwargs: Any) -> Reply:
        """A plain answer."""
        return cls(text=text, **kwargs)

    @classmethod
    def verdict(cls, passes: bool, issues: Iterable[str] = (), **kwargs: Any) -> Reply:
        """A judge reply that calls `record_verdict` with a well-formed verdict."""
        kwargs.setdefault("stop_reason", "tool_use")
        return cls(tool_input={"passes": passes, "issues": list(issues)}, **kwargs)

    @classmethod
    def raw_tool_input(cls, tool_input: Mapping[str, Any] | None, **kwargs: Any) -> Reply:
        """A judge reply with arbitrary tool input (None = the model called no tool)."""
        return cls(tool_input=tool_input, **kwargs)

    @classmethod
    def fail(cls, error: ProviderError, gate: asyncio.Event | None = None) -> Reply:
        """A call that raises `error`."""
        return cls(error=error, gate=gate)


@dataclass
class RecordedCall:
    """What one call received and how it ended."""

    model: str
    role: Literal["answer", "judge"]
    messages: list[Message]
    max_tokens: int
    timeout_s: float
    system: str | None
    tool: ToolSpec | None
    headers: Mapping[str, str]
    params: AnswerParams | None = None
    streamed: bool = False
    outcome: Literal["pending", "ok", "error", "cancelled"] = "pending"
    # Set whenever a call starts or ends, for tests that wait on calls.
    changed: asyncio.Event | None = field(default=None, repr=False, compare=False)

    def end(self, outcome: Literal["ok", "error", "cancelled"]) -> None:
        """Record how the call ended."""
        self.outcome = outcome
        if self.changed is not None:
            self.changed.set()

    @property
    def cancelled(self) -> bool:
        """Whether the call was cancelled while in flight."""
        return self.outcome == "cancelled"


class _CallLog:
    """The calls a double received, and a way to wait for them without sleeping."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self._changed = asyncio.Event()

    def _record(
        self,
        *,
        model: str,
        messages: list[Message],
        max_tokens: int,
        timeout_s: float,
        system: str | None,
        tool: ToolSpec | None,
        headers: Mapping[str, str] | None,
        params: AnswerParams | None = None,
        streamed: bool = False,
    ) -> RecordedCall:
        role: Literal["answer", "judge"] = "judge" if tool is not None else "answer"
        call = RecordedCall(
            model,
            role,
            list(messages),
            max_tokens,
            timeout_s,
            system,
            tool,
            dict(headers or {}),
            params,
            streamed,
            changed=self._changed,
        )
        self.calls.append(call)
        self._changed.set()
        return call

    def calls_to(self, model: str, role: str | None = None) -> list[RecordedCall]:
        """The calls made to `model`, optionally only those of one role."""
        return [c for c in self.calls if c.model == model and role in (None, c.role)]

    async def wait_for_calls(self, count: int) -> None:
        """Return once at least `count` calls have started."""
        while len(self.calls) < count:
            self._changed.clear()
            await self._changed.wait()

    async def wait_settled(self) -> None:
        """Return once every call started so far has ended."""
        while any(c.outcome == "pending" for c in self.calls):
            self._changed.clear()
            await self._changed.wait()


class ScriptedProvider(_CallLog):
    """Implements `Provider` from per-model queues of replies; records every call."""

    def __init__(
        self,
        answers: Mapping[str, Iterable[Reply]] | None = None,
        judges: Mapping[str, Iterable[Reply]] | None = None,
    ) -> None:
        super().__init__()
        self.closed = False
        # count_tokens: a model's count (or the error its call raises); unset, the estimate.
        self.token_counts: dict[str, int | ProviderError] = {}
        # The models count_tokens was asked for, in order.
        self.counted: list[str] = []
        self._queues: dict[tuple[str, str], deque[Reply]] = {}
        for role, script in (("answer", answers or {}), ("judge", judges or {})):
            for model, replies in script.items():
                self._queues[(model, role)] = deque(replies)

    def script(
        self, model: str, *replies: Reply, role: Literal["answer", "judge"] = "answer"
    ) -> None:
        """Queue more `replies` for `model`'s calls in `role`."""
        self._queues.setdefault((model, role), deque()).extend(replies)

    def unused(self) -> dict[tuple[str, str], int]:
        """Replies left in each queue, so tests can assert the script was used up."""
        return {key: len(queue) for key, queue in self._queues.items() if queue}

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
        """Answer with the next scripted reply for `model` and the call's role."""
        call = self._record(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            system=system,
            tool=tool,
            headers=headers,
            params=params,
        )
        reply = self._next(call)
        try:
            # A real provider suspends on I/O; so does this one, so that tasks interleave.
            await asyncio.sleep(0)
            if reply.gate is not None:
                await reply.gate.wait()
        except asyncio.CancelledError:
            call.end("cancelled")
            raise
        if reply.error is not None:
            call.end("error")
            raise reply.error
        call.end("ok")
        return reply.completion(model)

    def _next(self, call: RecordedCall) -> Reply:
        queue = self._queues.get((call.model, call.role))
        if not queue:
            call.end("error")
            raise ScriptExhausted(f"no scripted {call.role} reply left for model {call.model!r}")
        return queue.popleft()

    async def stream(
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
        """Stream the next scripted answer for `model`: its deltas, then its completion."""
        call = self._record(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            system=system,
            tool=None,
            headers=headers,
            params=params,
            streamed=True,
        )
        reply = self._next(call)
        try:
            await asyncio.sleep(0)
            if reply.gate is not None:
                await reply.gate.wait()
            if reply.error is not None:
                call.end("error")
                raise reply.error
            for i, chunk in enumerate(reply.chunks()):
                yield TextDelta(clean_text(chunk))
                if i == 0:
                    await self._mid_stream(call, reply)
                else:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            call.end("cancelled")
            raise
        except GeneratorExit:
            # The consumer closed the stream early: the call ends upstream too.
            call.end("cancelled")
            raise
        call.end("ok")
        yield reply.completion(model)

    async def _mid_stream(self, call: RecordedCall, reply: Reply) -> None:
        if reply.mid_gate is not None:
            await reply.mid_gate.wait()
        else:
            await asyncio.sleep(0)
        if reply.mid_error is not None:
            call.end("error")
            raise reply.mid_error

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
        """`token_counts[model]` (raised, if an error), else the replay backend's estimate."""
        self.counted.append(model)
        scripted = self.token_counts.get(model)
        if isinstance(scripted, ProviderError):
            raise scripted
        if scripted is not None:
            return scripted
        body = count_body(model=model, messages=messages, system=system, params=params)
        return prompt_tokens(body, messages, system)

    async def aclose(self) -> None:
        """Nothing to release; remembers that it was closed."""
        self.closed = True


class RecordingProvider(_CallLog):
    """Delegates to a real provider, recording each call.

    Keys of `extra_headers` and `gates` are (model, role) pairs: matching calls carry the
    extra headers, and wait for the gate to be set before they are forwarded.
    """

    def __init__(
        self,
        inner: Provider,
        extra_headers: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
        gates: Mapping[tuple[str, str], asyncio.Event] | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._extra = dict(extra_headers or {})
        self._gates = dict(gates or {})

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
        """Forward the call, with any extra headers configured for its model and role."""
        role = "judge" if tool is not None else "answer"
        merged = {**(headers or {}), **self._extra.get((model, role), {})}
        call = self._record(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            system=system,
            tool=tool,
            headers=merged,
            params=params,
        )
        gate = self._gates.get((model, role))
        try:
            if gate is not None:
                await gate.wait()
            completion = await self._inner.complete(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
                system=system,
                tool=tool,
                headers=merged,
                params=params,
            )
        except asyncio.CancelledError:
            call.end("cancelled")
            raise
        except ProviderError:
            call.end("error")
            raise
        call.end("ok")
        return completion

    async def stream(
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
        """Forward the streamed call, recording how it ended."""
        merged = {**(headers or {}), **self._extra.get((model, "answer"), {})}
        call = self._record(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            system=system,
            tool=None,
            headers=merged,
            params=params,
            streamed=True,
        )
        gate = self._gates.get((model, "answer"))
        inner = self._inner.stream(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            system=system,
            headers=merged,
            params=params,
        )
        try:
            if gate is not None:
                await gate.wait()
            async for item in inner:
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            call.end("cancelled")
            raise
        except ProviderError:
            call.end("error")
            raise
        finally:
            await inner.aclose()
        call.end("ok")

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
        """The wrapped provider's count (not recorded: it makes no answer or judge call)."""
        return await self._inner.count_tokens(
            model=model,
            messages=messages,
            timeout_s=timeout_s,
            system=system,
            headers=headers,
            params=params,
        )

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self._inner.aclose()
