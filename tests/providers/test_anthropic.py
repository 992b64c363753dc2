"""AnthropicProvider: the real SDK against a real replay server, errors translated at the edge."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fixtures import TRIO, make_records
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
from tierroute.providers import prompts
from tierroute.providers.anthropic import AnthropicProvider, build_provider, parse_retry_after
from tierroute.providers.base import Message, Provider, ToolSpec
from tierroute.providers.replay import ReplayServer, ReplayStore
from tierroute.settings import ReplayConfig, Settings, TierConfig

TIERS = (
    TierConfig("cheap", "replay-cheap", 1.0, 5.0),
    TierConfig("mid", "replay-mid", 3.0, 15.0),
    TierConfig("top", "replay-top", 15.0, 75.0),
)
CHEAP, MID = TIERS[0].model, TIERS[1].model
RECORDS = make_records(10, claude=True)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """A replay server on port 0 answering at once from the fixture records."""
    with ReplayServer(ReplayStore(RECORDS), TIERS, ReplayConfig(time_scale=0.0)) as running:
        yield running


@pytest.fixture
async def provider(server: ReplayServer) -> AsyncIterator[AnthropicProvider]:
    """A provider pointed at the module's replay server."""
    client = AnthropicProvider(api_key="test-key", base_url=server.base_url)
    yield client
    await client.aclose()


async def call(
    provider: AnthropicProvider,
    *,
    model: str = CHEAP,
    fault: str | None = None,
    timeout_s: float = 10.0,
) -> None:
    headers = {"x-tierroute-fault": fault} if fault else None
    await provider.complete(
        model=model,
        messages=[Message("user", RECORDS[0]["prompt"])],
        max_tokens=256,
        timeout_s=timeout_s,
        headers=headers,
    )


def test_provider_satisfies_the_protocol() -> None:
    """AnthropicProvider is a Provider (checked statically too)."""
    provider: Provider = AnthropicProvider(api_key="k", base_url="http://127.0.0.1:9")
    assert callable(provider.complete)


async def test_completion_carries_text_usage_and_stop_reason(
    provider: AnthropicProvider,
) -> None:
    """A plain call returns the text, usage, stop reason, model and a latency."""
    recorded = RECORDS[0]["models"][TRIO["cheap"]]
    completion = await provider.complete(
        model=CHEAP,
        messages=[Message("user", RECORDS[0]["prompt"])],
        max_tokens=512,
        timeout_s=10.0,
        system="Answer carefully.",
    )
    assert completion.text == recorded["response"]
    assert completion.output_tokens == recorded["output_tokens"]
    assert completion.input_tokens >= recorded["input_tokens"]
    assert completion.stop_reason == "end_turn"
    assert completion.model == CHEAP
    assert completion.latency_s > 0
    assert completion.tool_input is None


async def test_multi_turn_history_is_sent(provider: AnthropicProvider) -> None:
    """Earlier turns go to the model as user and assistant messages."""
    messages = [
        Message("user", "Earlier question"),
        Message("assistant", "Earlier answer"),
        Message("user", RECORDS[1]["prompt"]),
    ]
    completion = await provider.complete(
        model=MID, messages=messages, max_tokens=512, timeout_s=10.0
    )
    assert completion.text == RECORDS[1]["models"][TRIO["mid"]]["response"]


async def test_forced_tool_call_returns_its_input(provider: AnthropicProvider) -> None:
    """With a tool, the tool_use block's input comes back as tool_input."""
    record = RECORDS[2]
    completion = await provider.complete(
        model=MID,
        messages=prompts.judge_messages(record["prompt"], "The answer is (A)."),
        max_tokens=256,
        timeout_s=10.0,
        system=prompts.JUDGE_SYSTEM,
        tool=prompts.JUDGE_TOOL,
    )
    assert completion.tool_input is not None
    assert set(completion.tool_input) == {"passes", "issues"}
    assert completion.stop_reason == "tool_use"


async def test_tool_input_is_none_without_a_tool_use_block(provider: AnthropicProvider) -> None:
    """When the model answers in text instead of calling the tool, tool_input is None."""
    completion = await provider.complete(
        model=MID,
        messages=prompts.judge_messages(RECORDS[3]["prompt"], "The answer is (A)."),
        max_tokens=256,
        timeout_s=10.0,
        tool=prompts.JUDGE_TOOL,
        headers={"x-tierroute-fault": "malformed_judge:text"},
    )
    assert completion.tool_input is None
    assert completion.text


async def test_a_forced_tool_comes_back_as_its_tool_use_block(provider: AnthropicProvider) -> None:
    """A forced tool's call is the completion's tool input and one of its content blocks."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    other = ToolSpec("lookup", "Look a city up.", schema)
    completion = await provider.complete(
        model=MID,
        messages=[Message("user", RECORDS[4]["prompt"])],
        max_tokens=256,
        timeout_s=10.0,
        tool=other,
    )
    assert completion.tool_input == {"city": RECORDS[4]["prompt"][:200]}
    assert [b["name"] for b in completion.tool_calls] == ["lookup"]
    assert completion.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("529", ProviderOverloaded, 529),
        ("500", ProviderServerError, 500),
        ("400", TerminalProviderError, 400),
        ("401", TerminalProviderError, 401),
        ("403", TerminalProviderError, 403),
        ("404", TerminalProviderError, 404),
        ("413", TerminalProviderError, 413),
        ("spend_limit", TerminalProviderError, 429),
        ("drop", ProviderConnectionError, None),
    ],
)
async def test_fault_maps_to_its_error_class(
    provider: AnthropicProvider, fault: str, error: type[ProviderError], status: int | None
) -> None:
    """Each injected fault surfaces as its tierroute.errors class, with the HTTP status."""
    with pytest.raises(error) as caught:
        await call(provider, fault=fault)
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert isinstance(caught.value.__cause__, Exception)


async def test_rate_limit_carries_retry_after(provider: AnthropicProvider) -> None:
    """A 429 becomes RateLimited with the retry-after seconds the server sent."""
    with pytest.raises(RateLimited) as caught:
        await call(provider, fault="429:7")
    assert caught.value.retry_after == 7.0
    assert caught.value.retryable


async def test_rate_limit_without_a_number_uses_the_configured_retry_after(
    provider: AnthropicProvider,
) -> None:
    """A bare 429 fault sends the configured default retry-after (1 s)."""
    with pytest.raises(RateLimited) as caught:
        await call(provider, fault="429")
    assert caught.value.retry_after == 1.0


async def test_timeout_fault_is_a_provider_timeout(provider: AnthropicProvider) -> None:
    """A held connection ends in ProviderTimeout at the per-call timeout."""
    with pytest.raises(ProviderTimeout):
        await call(provider, fault="timeout", timeout_s=0.2)


async def test_unknown_model_is_terminal(provider: AnthropicProvider) -> None:
    """A model the server does not know is a 404: terminal, never retried."""
    with pytest.raises(TerminalProviderError) as caught:
        await call(provider, model="no-such-model")
    assert caught.value.status_code == 404
    assert not caught.value.retryable


async def test_unreachable_server_is_a_connection_error() -> None:
    """Nothing listening at the base URL is a ProviderConnectionError."""
    with ReplayServer(ReplayStore(), TIERS, ReplayConfig(time_scale=0.0)) as gone:
        url = gone.base_url
    client = AnthropicProvider(api_key="k", base_url=url)
    try:
        with pytest.raises(ProviderConnectionError):
            await call(client)
    finally:
        await client.aclose()


async def test_cancellation_propagates_and_closes_the_request() -> None:
    """Cancelling complete() raises CancelledError and the server sees the client leave."""
    config = ReplayConfig(time_scale=1.0, ttft_s=(3600.0,), tokens_per_s=(1.0,))
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as slow:
        client = AnthropicProvider(api_key="k", base_url=slow.base_url)
        try:
            task = asyncio.create_task(call(client, timeout_s=7200.0))
            assert await asyncio.to_thread(slow.wait_for, lambda s: s.in_flight == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(slow.wait_for, lambda s: s.disconnected == 1)
        finally:
            await client.aclose()


def test_parse_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    """retry-after is read as seconds, retry-after-ms as milliseconds, or as an HTTP date."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": "2"}, now) == 2.0
    assert parse_retry_after({"Retry-After": "1.5"}, now) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert parse_retry_after({"retry-after": date}, now) == 30.0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None


async def test_build_provider_for_replay_sends_the_replay_key() -> None:
    """build_provider with a base URL uses replay.api_key, never the Anthropic key."""
    settings = Settings.from_mapping(
        {
            "tiers": [t.__dict__ for t in TIERS],
            "anthropic": {"api_key": "sk-real"},
            "replay": {"api_key": "replay-secret", "time_scale": 0},
        }
    )
    with ReplayServer(ReplayStore(RECORDS), TIERS, settings.replay) as replay:
        client = build_provider(settings, base_url=replay.base_url)
        try:
            await call(client)
        finally:
            await client.aclose()


def test_build_provider_without_a_key_is_a_config_error() -> None:
    """The real Anthropic backend without an API key is refused at build time."""
    settings = Settings.from_mapping({"tiers": [t.__dict__ for t in TIERS]})
    with pytest.raises(ConfigError):
        build_provider(settings)


async def test_build_provider_uses_the_configured_base_url() -> None:
    """Without an explicit base URL, anthropic.base_url (or Anthropic's API) is the target."""
    settings = Settings.from_mapping(
        {
            "tiers": [t.__dict__ for t in TIERS],
            "anthropic": {"api_key": "sk-x", "base_url": "http://127.0.0.1:9"},
        }
    )
    client = build_provider(settings)
    try:
        assert client.base_url.startswith("http://127.0.0.1:9")
    finally:
        await client.aclose()
