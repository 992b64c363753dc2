"""`AnthropicProvider`: the Provider Protocol over the official Anthropic SDK.

The same class talks to Claude and to the replay backend (a base URL away). The SDK's own
retries are off: the cascade owns retries, so one deadline and one attempt budget cover
every call. SDK exceptions are translated here, at the edge, into `tierroute.errors`.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anthropic
import httpx2

from tierroute.errors import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    TerminalProviderError,
)
from tierroute.providers.base import (
    AnswerParams,
    Completion,
    Message,
    StreamItem,
    TextDelta,
    ToolSpec,
    clean_json,
    clean_text,
    count_body,
    message_body,
)
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

ANTHROPIC_API_URL = "https://api.anthropic.com"
# The replay backend accepts any key unless it is configured with one.
REPLAY_PLACEHOLDER_KEY = "replay-no-key"
_HTTP_OVERLOADED = 529
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_REQUEST_TIMEOUT = 408
_HTTP_BAD_REQUEST = 400
_HTTP_SERVER_ERROR = 500
# The status each error type of the Messages API stands for (for errors inside a stream).
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_SPEND_LIMIT_WORDS = ("spend limit", "spend_limit", "billing", "credit balance", "usage limit")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    # The SDK names spend-limit 429s by error code; older bodies only say so in words.
    code = (exc.error_code or "").lower()
    if "spend_limit" in code or exc.type == "billing_error":
        return True
    message = f"{exc.api_message or ''} {exc.message}".lower()
    return any(word in message for word in _SPEND_LIMIT_WORDS)


def _status_error(exc: anthropic.APIStatusError) -> ProviderError:
    """The tierroute error for an HTTP error status: retryable or not, and why.

    An error event inside a stream arrives under the stream's HTTP 200: its error type
    says which status it stands for.
    """
    status = exc.status_code
    if status < _HTTP_BAD_REQUEST:
        status = _STREAM_ERROR_STATUS.get(exc.type or "", _HTTP_SERVER_ERROR)
    detail = f"HTTP {status}: {exc.type or 'error'}"
    if status == _HTTP_TOO_MANY_REQUESTS:
        if _is_spend_limit(exc):
            return TerminalProviderError(f"{detail} (spend limit)", status_code=status)
        retry_after = parse_retry_after(exc.response.headers)
        return RateLimited(detail, retry_after=retry_after, status_code=status)
    if status == _HTTP_OVERLOADED or isinstance(exc, anthropic.OverloadedError):
        return ProviderOverloaded(detail, status_code=status)
    if status >= 500:
        return ProviderServerError(detail, status_code=status)
    if status == _HTTP_REQUEST_TIMEOUT:
        return ProviderTimeout(detail, status_code=status)
    return TerminalProviderError(detail, status_code=status)


def translate_error(exc: anthropic.AnthropicError) -> ProviderError:
    """The tierroute error for an SDK exception; the caller raises it `from exc`."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout("the provider did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderConnectionError("the connection to the provider failed")
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderServerError("the provider's response did not match its schema")
    return ProviderError(f"provider error: {type(exc).__name__}")


# Request fields the SDK's create() and stream() no longer name as arguments (anthropic 2.x):
# the Messages API still reads them from the body, so they travel in `extra_body`.
_BODY_ONLY = ("temperature", "top_p", "top_k")


def _sdk_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API request body as the SDK's keyword arguments."""
    arguments = {key: value for key, value in body.items() if key not in _BODY_ONLY}
    extra = {key: body[key] for key in _BODY_ONLY if key in body}
    if extra:
        arguments["extra_body"] = extra
    return arguments


class AnthropicProvider:
    """Completes conversations with Anthropic's Messages API (or the replay backend)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = ANTHROPIC_API_URL,
        connect_timeout_s: float = 5.0,
        default_timeout_s: float = 60.0,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            # The cascade owns retries (one deadline, one attempt budget): none here.
            max_retries=0,
            timeout=anthropic.Timeout(default_timeout_s, connect=connect_timeout_s),
            # tierroute makes its own span per tier call; the SDK's would duplicate them and
            # could be switched to capture content by environment variables.
            open_telemetry=False,
        )

    @property
    def base_url(self) -> str:
        """Where requests go."""
        return str(self._client.base_url)

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
        body = message_body(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            system=system,
            tool=tool,
            params=params,
        )
        started = time.perf_counter()
        try:
            response = await self._client.messages.create(
                **_sdk_arguments(body),
                timeout=self._timeout(timeout_s),
                extra_headers=dict(headers) if headers else None,
            )
        except anthropic.AnthropicError as exc:
            error = translate_error(exc)
            logger.debug("provider call to %s failed: %s", model, error)
            raise error from exc
        return _completion(response, tool, time.perf_counter() - started)

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
        """Call `model` once through the SDK's streaming helper: deltas, then the Completion.

        Errors that arrive inside the stream (an `error` event after HTTP 200, a dropped
        connection) are translated like those before it. Leaving the iterator early closes
        the HTTP response, which ends the call upstream.
        """
        body = message_body(
            model=model, messages=messages, max_tokens=max_tokens, system=system, params=params
        )
        started = time.perf_counter()
        try:
            async with self._client.messages.stream(
                **_sdk_arguments(body),
                timeout=self._timeout(timeout_s),
                extra_headers=dict(headers) if headers else None,
            ) as stream:
                message = None
                async for event in stream:
                    if event.type == "text":
                        yield TextDelta(clean_text(event.text))
                    elif event.type == "message_stop":
                        # The answer is whole: a connection that fails after it loses nothing.
                        message = stream.current_message_snapshot
                        break
                if message is None:
                    raise ProviderConnectionError("the stream ended before message_stop")
        except anthropic.AnthropicError as exc:
            error = translate_error(exc)
            logger.debug("streamed call to %s failed: %s", model, error)
            raise error from exc
        except httpx2.TransportError as exc:
            # A connection cut inside the body surfaces from the HTTP library itself.
            raise ProviderConnectionError("the connection to the provider failed") from exc
        yield _completion(message, None, time.perf_counter() - started)

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
        """The input tokens `model` reads for this request: the SDK's count_tokens."""
        body = count_body(model=model, messages=messages, system=system, params=params)
        try:
            counted = await self._client.messages.count_tokens(
                **body,
                timeout=self._timeout(timeout_s),
                extra_headers=dict(headers) if headers else None,
            )
        except anthropic.AnthropicError as exc:
            raise translate_error(exc) from exc
        return counted.input_tokens

    def _timeout(self, timeout_s: float) -> anthropic.Timeout:
        return anthropic.Timeout(timeout_s, connect=min(self._connect_timeout_s, timeout_s))

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        await self._client.close()


def _completion(
    response: anthropic.types.Message, tool: ToolSpec | None, latency_s: float
) -> Completion:
    """A Completion from the SDK's message: its text, its blocks as JSON, and its usage.

    Lone surrogates in the text and blocks become U+FFFD here, where upstream text enters.
    """
    text = clean_text("".join(block.text for block in response.content if block.type == "text"))
    tool_input: Mapping[str, Any] | None = None
    if tool is not None:
        for block in response.content:
            if block.type == "tool_use" and block.name == tool.name:
                tool_input = clean_json(dict(block.input))
                break
    usage = response.usage
    return Completion(
        text=text,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        stop_reason=response.stop_reason or "",
        latency_s=latency_s,
        model=response.model,
        tool_input=tool_input,
        extra={"message_id": response.id},
        content=tuple(_block_json(block) for block in response.content),
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
    )


def _block_json(block: Any) -> dict[str, Any]:
    # The SDK's models know their wire form; None fields are the API's omitted ones.
    data: dict[str, Any] = clean_json(block.to_dict(mode="json", exclude_none=True))
    return data


def build_provider(settings: Settings, base_url: str | None = None) -> AnthropicProvider:
    """The provider for these settings; `base_url` points it at a replay server instead.

    Anthropic's key is only ever sent to Anthropic's URL (or `anthropic.base_url`): a
    replay server gets `replay.api_key`, or a placeholder when that is unset.
    """
    if base_url is not None:
        api_key = settings.replay.api_key.get() or REPLAY_PLACEHOLDER_KEY
        target = base_url
    else:
        api_key = settings.anthropic.api_key.get()
        if not api_key:
            raise ConfigError("the Anthropic backend needs ANTHROPIC_API_KEY (anthropic.api_key)")
        target = settings.anthropic.base_url or ANTHROPIC_API_URL
    return AnthropicProvider(
        api_key=api_key,
        base_url=target,
        connect_timeout_s=settings.anthropic.connect_timeout_s,
        default_timeout_s=settings.cascade.per_call_timeout_s,
    )
