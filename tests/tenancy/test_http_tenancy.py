"""Tenants' limits on the HTTP Messages API endpoint, through the official `anthropic` SDK:
the same tenancy core as gRPC, its refusals as Anthropic's 429."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from tests.helpers import running_server
from tests.tenancy.serving import CHEAP, EASY, SPENT, tenant_settings
from tierroute.providers.scripted import ScriptedProvider


async def _ask(client: anthropic.AsyncAnthropic, tenant: str) -> anthropic.types.Message:
    return await client.messages.create(
        model=CHEAP,
        max_tokens=1000,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_headers={"x-tierroute-tenant": tenant},
    )


async def test_a_tenant_past_its_rate_limit_gets_a_429_with_retry_after(tmp_path: Path) -> None:
    """With one request per minute, acme's second call is a 429 rate_limit_error that says
    when to retry; another tenant is not held."""
    settings = tenant_settings(tmp_path, "[tenants.acme]\nrequests_per_minute = 1\n")
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT]})
    async with running_server(settings, scorer=EASY, provider=provider, http=True) as served:
        sdk = anthropic.AsyncAnthropic(base_url=served.http_url, api_key="x", max_retries=0)
        async with sdk:
            first = await _ask(sdk, "acme")
            with pytest.raises(anthropic.RateLimitError) as caught:
                await _ask(sdk, "acme")
            other = await _ask(sdk, "globex")
    assert first.content[0].text == "Paris"  # type: ignore[union-attr]
    assert other.content[0].text == "Paris"  # type: ignore[union-attr]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "rate_limit_error"
    assert "acme" in body["error"]["message"]
    assert int(caught.value.response.headers["retry-after"]) > 0
