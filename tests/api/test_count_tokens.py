"""`POST /v1/messages/count_tokens` through the official `anthropic` SDK's
`messages.count_tokens`: the real server on port 0, counting with its replay backend (the
replay server's count, asked over HTTP by the real provider) or an injected test double."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, running_server
from tierroute.errors import RateLimited
from tierroute.providers import Message, estimate_tokens
from tierroute.providers.anthropic import AnthropicProvider
from tierroute.providers.base import prompt_text
from tierroute.providers.replay.http_server import ReplayServer
from tierroute.providers.replay.messages import ReplayEngine
from tierroute.providers.replay.provider import ReplayProvider
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.providers.scripted import ScriptedProvider
from tierroute.testing import StaticScorer

QUESTION = str(labelled(cascade_records(), "cheap")["prompt"])
CHEAP, MID = "claude-haiku-4-5", "claude-sonnet-4-6"
EASY = StaticScorer((0.95, 0.03, 0.02))
HARD = StaticScorer((0.02, 0.03, 0.95))
LOOKUP: Any = {
    "name": "search_docs",
    "description": "Search the documentation.",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


async def test_the_replay_servers_count_comes_back(
    http_served: Running, messages_client: anthropic.AsyncAnthropic
) -> None:
    """`tierroute` is counted by the replay server, asked once, with its own rule."""
    counted = await messages_client.messages.count_tokens(
        model="tierroute",
        system="Be brief.",
        messages=[{"role": "user", "content": QUESTION}],
    )
    assert counted.input_tokens == estimate_tokens(prompt_text("Be brief.", [QUESTION], []))
    backend = http_served.server.backend
    assert backend is not None
    assert backend.replay is not None
    assert backend.replay.stats().by_kind.get("count_tokens") == 1


async def test_tools_are_counted(messages_client: anthropic.AsyncAnthropic) -> None:
    """A tool's schema is part of what the model reads, so it adds to the count."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    bare = await messages_client.messages.count_tokens(model=CHEAP, messages=messages)
    with_tool = await messages_client.messages.count_tokens(
        model=CHEAP, messages=messages, tools=[LOOKUP]
    )
    assert with_tool.input_tokens > bare.input_tokens


async def test_the_cascade_is_counted_by_the_tier_it_would_start_on() -> None:
    """For `tierroute` the routed start tier's model counts; the header names the tier."""
    provider = ScriptedProvider()
    provider.token_counts = {CHEAP: 11, "claude-opus-4-8": 33}
    async with running_server(make_settings(), scorer=HARD, provider=provider, http=True) as s:
        sdk = anthropic.AsyncAnthropic(base_url=s.http_url, api_key="unused", max_retries=0)
        async with sdk:
            raw = await sdk.messages.with_raw_response.count_tokens(
                model="tierroute", messages=[{"role": "user", "content": QUESTION}]
            )
    assert (await raw.parse()).input_tokens == 33
    assert raw.headers["x-tierroute-tier"] == "expensive"
    assert provider.counted == ["claude-opus-4-8"]


async def test_a_tier_model_id_is_counted_by_that_model() -> None:
    """A concrete model id is counted by that model, whatever routing would choose."""
    provider = ScriptedProvider()
    provider.token_counts = {MID: 22}
    async with running_server(make_settings(), scorer=HARD, provider=provider, http=True) as s:
        sdk = anthropic.AsyncAnthropic(base_url=s.http_url, api_key="unused", max_retries=0)
        async with sdk:
            raw = await sdk.messages.with_raw_response.count_tokens(
                model=MID, messages=[{"role": "user", "content": QUESTION}]
            )
    assert (await raw.parse()).input_tokens == 22
    assert raw.headers["x-tierroute-tier"] == "mid"
    assert provider.counted == [MID]


async def test_a_providers_rate_limit_is_a_429() -> None:
    """The provider's refusal keeps its kind: a rate limit is the SDK's RateLimitError."""
    provider = ScriptedProvider()
    provider.token_counts = {CHEAP: RateLimited("HTTP 429: rate_limit_error", retry_after=3.0)}
    async with running_server(make_settings(), scorer=EASY, provider=provider, http=True) as s:
        sdk = anthropic.AsyncAnthropic(base_url=s.http_url, api_key="unused", max_retries=0)
        async with sdk:
            with pytest.raises(anthropic.RateLimitError) as caught:
                await sdk.messages.count_tokens(
                    model=CHEAP, messages=[{"role": "user", "content": QUESTION}]
                )
    assert caught.value.response.headers["retry-after"] == "3"


async def test_an_unknown_model_is_404(messages_client: anthropic.AsyncAnthropic) -> None:
    """A model id tierroute does not serve is the SDK's NotFoundError."""
    with pytest.raises(anthropic.NotFoundError):
        await messages_client.messages.count_tokens(
            model="gpt-nothing", messages=[{"role": "user", "content": QUESTION}]
        )


async def test_a_field_count_tokens_does_not_take_is_400(
    messages_client: anthropic.AsyncAnthropic,
) -> None:
    """A field outside count_tokens' own (here temperature) is refused, named."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await messages_client.messages.count_tokens(
            model=CHEAP,
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"temperature": 0.5},
        )
    assert "temperature" in caught.value.message


async def test_a_malformed_conversation_is_400(messages_client: anthropic.AsyncAnthropic) -> None:
    """The Messages door's checks apply: a conversation ending with the assistant is refused."""
    with pytest.raises(anthropic.BadRequestError):
        await messages_client.messages.count_tokens(
            model=CHEAP, messages=[{"role": "assistant", "content": "no user turn"}]
        )


async def test_the_anthropic_provider_asks_the_sdks_count_tokens() -> None:
    """AnthropicProvider.count_tokens is the SDK's call: against a replay server, its count."""
    settings = make_settings()
    with ReplayServer(ReplayStore(), settings.tiers, settings.replay) as replay:
        provider = AnthropicProvider(api_key="unused", base_url=replay.base_url)
        try:
            count = await provider.count_tokens(
                model=CHEAP, messages=[Message("user", QUESTION)], timeout_s=10.0, system="Hi."
            )
        finally:
            await provider.aclose()
        assert replay.stats().by_kind == {"count_tokens": 1}
    assert count == estimate_tokens(prompt_text("Hi.", [QUESTION], []))


async def test_the_in_process_replay_provider_counts_as_the_server_does() -> None:
    """ReplayProvider.count_tokens gives the replay server's count without HTTP."""
    settings = make_settings()
    engine = ReplayEngine(ReplayStore(), settings.tiers, settings.replay)
    provider = ReplayProvider(engine)
    count = await provider.count_tokens(
        model=CHEAP, messages=[Message("user", QUESTION)], timeout_s=10.0
    )
    assert count == estimate_tokens(QUESTION)
