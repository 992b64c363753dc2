"""Fixtures of the api tests: a real server whose replay backend serves recorded answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.api.hostile_bodies import LIMIT
from tests.helpers import Running, acme_tokens, make_settings, running_server
from tierroute.testing import StaticScorer


@pytest.fixture
async def served(replay_data: Path) -> AsyncIterator[Running]:
    """A server whose replay backend serves `replay_data` instantly; routes to cheap."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), environ={}) as s:
        yield s


@pytest.fixture
async def http_served(replay_data: Path) -> AsyncIterator[Running]:
    """`served` with the HTTP port open too."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, environ={}, http=True) as s:
        yield s


@pytest.fixture
async def messages_client(http_served: Running) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The `anthropic` SDK pointed at `http_served`; no retries, so each error is seen as sent."""
    sdk = anthropic.AsyncAnthropic(base_url=http_served.http_url, api_key="unused", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited_served() -> AsyncIterator[Running]:
    """One server for the module: replay's synthetic answers, a 1 MiB body limit."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_TIME_SCALE": "0", "TIERROUTE_HTTP_MAX_BODY_BYTES": str(LIMIT)}
    )
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), http=True) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def door_http(limited_served: Running) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client of `limited_served`'s door (no SDK: the bodies are not ones an SDK
    would send)."""
    async with httpx.AsyncClient(base_url=limited_served.http_url, timeout=60) as client:
        yield client


@pytest.fixture
async def guarded_served(replay_data: Path, tmp_path: Path) -> AsyncIterator[Running]:
    """Tokens on (`ACME_TOKEN` is acme's), no retries of a failed tier, a 4 KB body limit;
    replay answers at once."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(replay_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            "TIERROUTE_AUTH_TOKENS_FILE": str(acme_tokens(tmp_path)),
            "TIERROUTE_CASCADE_MAX_RETRIES_PER_TIER": "0",
            "TIERROUTE_HTTP_MAX_BODY_BYTES": "4096",
        }
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(settings, scorer=scorer, environ={}, http=True) as s:
        yield s
