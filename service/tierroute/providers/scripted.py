"""Test doubles the cascade's tests inject: a scripted provider and a recording wrapper.

`ScriptedProvider` answers from a script. Each model has two queues of `Reply` objects, one
for answer calls and one for judge calls (a call with a forced tool is a judge call), so
concurrent calls to one model cannot take each other's replies. A reply can hold its call
open on an `asyncio.Event` until a test releases it, which lets tests observe cancellation
without depending on timing.

`RecordingProvider` wraps a real provider (the Anthropic SDK against the replay server) and
can add headers to the calls of one model and role, for example a replay fault that holds
only the speculative answer call open and not the judge call to the same model.

Both record every call with what was sent and how it ended.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tierroute.errors import ProviderError
from tierroute.providers.base import Completion, Message, Provider, ToolSpec


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
    outcome: Literal["pending", "ok", "error", "cancelled"] = "pending"

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
    ) -> RecordedCall:
        role: Literal["answer", "judge"] = "judge" if tool is not None else "answer"
        call = RecordedCall(
            model, role, list(messages), max_tokens, timeout_s, system, tool, dict(headers or {})
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


class ScriptedProvider(_CallLog):
    """Implements `Provider` from per-model queues of replies; records every call."""

    def __init__(
        self,
        answers: Mapping[str, Iterable[Reply]] | None = None,
        judges: Mapping[str, Iterable[Reply]] | None = None,
    ) -> None:
        super().__init__()
        self.closed = False
        self._queues: dict[tuple[str, str], deque[Reply]] = {}
        for role, script in (("answer", answers or {}), ("judge", judges or {})):
            for model, replies in script.items():
                self._queues[(model, role)] = deque(replies)

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
        )
        queue = self._queues.get((model, call.role))
        if not queue:
            call.outcome = "error"
            raise ScriptExhausted(f"no scripted {call.role} reply left for model {model!r}")
        reply = queue.popleft()
        try:
            # A real provider suspends on I/O; so does this one, so that tasks interleave.
            await asyncio.sleep(0)
            if reply.gate is not None:
                await reply.gate.wait()
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        if reply.error is not None:
            call.outcome = "error"
            raise reply.error
        call.outcome = "ok"
        return Completion(
            text=reply.text,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            stop_reason=reply.stop_reason,
            latency_s=reply.latency_s,
            model=model,
            tool_input=reply.tool_input,
        )

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
            )
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except ProviderError:
            call.outcome = "error"
            raise
        call.outcome = "ok"
        return completion

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self._inner.aclose()
