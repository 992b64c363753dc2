"""JSON carried inside a string of a request body is held to the body's own bounds: a chat
completion whose tool call's `arguments` nest 10,000 deep is a 400 naming the field, not a
RecursionError and a 500; against the real server on port 0."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from tests.api.hostile_bodies import assert_no_traceback
from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.fixture
async def served() -> AsyncIterator[Running]:
    """A server with the HTTP endpoint, replay's synthetic answers."""
    settings = make_settings({"TIERROUTE_REPLAY_TIME_SCALE": "0"})
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), http=True) as s:
        yield s


async def test_deep_tool_call_arguments_are_a_400_naming_the_field(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool call's arguments nested past the bound are refused by name, in OpenAI's JSON."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP}}
    body = {
        "model": "tierroute",
        "messages": [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "found"},
        ],
    }
    async with httpx.AsyncClient(base_url=served.http_url, timeout=60) as client:
        response = await client.post(
            "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer any"},
        )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "tool_calls[0].function.arguments is nested more than" in message
    assert_no_traceback(caplog)
