"""`ReplayProvider`: the replay backend called in-process, without HTTP or the SDK.

It sends `ReplayEngine.handle` the very Messages API body `AnthropicProvider` would send,
waits the reply's simulated latency on the injected `sleep`, and translates error replies
into the same `tierroute.errors` classes `AnthropicProvider` raises for those statuses. The
offline evaluation runs the server's `Router` and `CascadeEngine` over it, so evaluation and
serving share every line of routing, cascade and replay logic; only the transport differs.
Under a virtual-time event loop (`tierroute.offline.evaluation.vclock`) the waits cost no real time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

from tierroute.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    TerminalProviderError,
)
from tierroute.providers.anthropic import parse_retry_after
from tierroute.providers.base import (
    AnswerParams,
    Completion,
    Message,
    StreamItem,
    TextDelta,
    ToolSpec,
    count_body,
    message_body,
)
from tierroute.providers.replay.messages import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    ReplayEngine,
    Reply,
)

_HTTP_OK = 200
_HTTP_REQUEST_TIMEOUT = 408
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_OVERLOADED = 529
_HTTP_SERVER_ERROR = 500
_SPEND_LIMIT_CODE = "spend_limit"


def status_error(reply: Reply) -> ProviderError:
    """The error `AnthropicProvider` raises for an HTTP error reply with this status."""
    status = reply.status
    body: Mapping[str, Any] = reply.body or {}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    assert isinstance(error, Mapping)  # narrowed above; keeps mypy's view exact
    error_type = str(error.get("type") or "error")
    detail = f"HTTP {status}: {error_type}"
    if status == _HTTP_TOO_MANY_REQUESTS:
        details = error.get("details")
        code = str(details.get("error_code", "")) if isinstance(details, Mapping) else ""
        message = str(error.get("message", "")).lower()
        if _SPEND_LIMIT_CODE in code or "spend limit" in message:
            return TerminalProviderError(f"{detail} (spend limit)", status_code=status)
        return RateLimited(detail, retry_after=parse_retry_after(reply.headers), status_code=status)
    if status == _HTTP_OVERLOADED:
        return ProviderOverloaded(detail, status_code=status)
    if status >= _HTTP_SERVER_ERROR:
        return ProviderServerError(detail, status_code=status)
    if status == _HTTP_REQUEST_TIMEOUT:
        return ProviderTimeout(detail, status_code=status)
    return TerminalProviderError(detail, status_code=status)


class ReplayProvider:
    """Implements `Provider` by calling a `ReplayEngine` directly.

    `sleep` waits out each reply's simulated latency (asyncio.sleep by default, which a
    virtual-time loop fast-forwards); `clock` measures the call's latency (the running
    loop's clock by default, so that it is virtual time under a virtual-time loop).
    """

    def __init__(
        self,
        engine: ReplayEngine,
        *,
        api_key: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._engine = engine
        self._api_key = api_key
        self._sleep = sleep
        self._clock = clock

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

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
        """Call `model` once through the replay engine; raise a ProviderError on failure."""
        # The same body AnthropicProvider's SDK call serialises, so token counts match.
        payload = message_body(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            system=system,
            tool=tool,
            params=params,
        )
        started = self._now()
        reply = self._send(payload, headers)
        await self._unanswered(reply, timeout_s)
        if reply.delay_s > 0:
            await self._sleep(reply.delay_s)
        if reply.status != _HTTP_OK:
            raise status_error(reply)
        return _completion(reply, tool, self._now() - started)

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
        """Stream `model`'s reply: each event after its simulated wait, then the Completion.

        The waits are the replay server's own, on the injected `sleep`, so time to first
        token is the latency model's (virtual time under a virtual-time loop).
        """
        payload = message_body(
            model=model, messages=messages, max_tokens=max_tokens, system=system, params=params
        )
        payload["stream"] = True
        started = self._now()
        reply = self._send(payload, headers)
        await self._unanswered(reply, timeout_s)
        if reply.status != _HTTP_OK:
            raise status_error(reply)
        for event in reply.events:
            if event.delay_s > 0:
                await self._sleep(event.delay_s)
            if event.name == "error":
                raise status_error(Reply(_HTTP_OVERLOADED, event.data))
            delta = event.data.get("delta") or {}
            if event.name == "content_block_delta" and delta.get("type") == "text_delta":
                yield TextDelta(str(delta.get("text", "")))
        yield _completion(reply, None, self._now() - started)

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
        """The replay server's count of the request's input tokens."""
        payload = count_body(model=model, messages=messages, system=system, params=params)
        reply = self._send(payload, headers, COUNT_TOKENS_PATH)
        if reply.status != _HTTP_OK:
            raise status_error(reply)
        return int((reply.body or {})["input_tokens"])

    def _send(
        self,
        payload: Mapping[str, Any],
        headers: Mapping[str, str] | None,
        path: str = MESSAGES_PATH,
    ) -> Reply:
        wire_headers = {"content-type": "application/json", **(headers or {})}
        if self._api_key:
            wire_headers["x-api-key"] = self._api_key
        return self._engine.handle(path, json.dumps(payload).encode(), wire_headers)

    async def _unanswered(self, reply: Reply, timeout_s: float) -> None:
        """Raise as the client would for a reply the server never sends."""
        if reply.action == "drop":
            raise ProviderConnectionError("the connection to the provider failed")
        if reply.action == "hold":
            # The server would hold the connection open; the client gives up at its timeout.
            await self._sleep(timeout_s)
            raise ProviderTimeout("the provider did not answer in time")

    async def aclose(self) -> None:
        """Nothing to release: no connections are held."""


def _completion(reply: Reply, tool: ToolSpec | None, latency_s: float) -> Completion:
    body = reply.body or {}
    content = body.get("content") or []
    text = "".join(str(block.get("text", "")) for block in content if block.get("type") == "text")
    tool_input: Mapping[str, Any] | None = None
    if tool is not None:
        for block in content:
            if block.get("type") == "tool_use" and block.get("name") == tool.name:
                tool_input = dict(block.get("input") or {})
                break
    usage = body.get("usage") or {}
    return Completion(
        text=text,
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        stop_reason=str(body.get("stop_reason") or ""),
        latency_s=latency_s,
        model=str(body.get("model", "")),
        tool_input=tool_input,
        extra={
            "message_id": str(body.get("id", "")),
            "recorded_model": reply.headers.get("x-tierroute-recorded-model", ""),
        },
        content=tuple(dict(block) for block in content),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
    )
