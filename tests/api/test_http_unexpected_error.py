"""An exception no handler expects (here a provider's tool call whose input no JSON encoder can
write) is answered in the door's own error JSON, a 500 with a generic message, and its
traceback is logged server-side only; where it was Starlette's plain-text 500. Both official
SDKs on the real server on port 0 with a scripted provider."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from tests.helpers import Running, make_settings, running_server
from tierroute.api.http.errors import INTERNAL_MESSAGE
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer

CHEAP = "claude-haiku-4-5"
QUESTION: Any = [{"role": "user", "content": "Call the tool."}]


class _Opaque:
    """A value a provider double hands back that no JSON encoder can write."""


def _unwritable() -> Reply:
    block = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"x": _Opaque()}}
    return Reply(text="calling", blocks=(block,), stop_reason="tool_use")


def _logged_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tierroute.api.http.guard" and r.exc_info]


@pytest.fixture
async def served() -> AsyncIterator[Running]:
    """The HTTP door over a scripted cheap tier that answers with an unwritable tool call."""
    provider = ScriptedProvider({CHEAP: [_unwritable()]})
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(make_settings(), scorer=scorer, provider=provider, http=True) as s:
        yield s


async def test_messages_door_answers_an_unexpected_error_as_api_error(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """/v1/messages: Anthropic's api_error 500, generic message, traceback only in the log."""
    async with anthropic.AsyncAnthropic(
        base_url=served.http_url, api_key="any", max_retries=0
    ) as sdk:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=CHEAP, max_tokens=64, messages=QUESTION)
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": INTERNAL_MESSAGE},
    }
    assert "Traceback" not in caught.value.response.text
    assert len(_logged_tracebacks(caplog)) == 1


async def test_chat_door_answers_an_unexpected_error_as_server_error(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """/v1/chat/completions: OpenAI's server_error 500, generic message, traceback only logged."""
    async with openai.AsyncOpenAI(
        base_url=f"{served.http_url}/v1", api_key="any", max_retries=0
    ) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.chat.completions.create(model=CHEAP, messages=QUESTION)
    assert caught.value.status_code == 500
    assert caught.value.response.json()["error"]["type"] == "server_error"
    assert caught.value.response.json()["error"]["message"] == INTERNAL_MESSAGE
    assert len(_logged_tracebacks(caplog)) == 1
