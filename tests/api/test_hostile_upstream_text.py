"""An upstream answer whose text holds a lone UTF-16 surrogate (which no request may hold, but
a provider's JSON can) is still answered on both HTTP doors: the body is written with `\\u`
escapes, so the official SDKs read the text as sent, where it was a 500 with a traceback; a
scripted provider on the real server on port 0."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.api.hostile_bodies import assert_no_traceback
from tests.helpers import make_settings, running_server
from tierroute.api import jsonbody
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer

CHEAP = "claude-haiku-4-5"
ANSWER = "half a pair \ud83d then café"
QUESTION: Any = [{"role": "user", "content": "Say something odd."}]


def test_encode_writes_a_lone_surrogate_as_its_escape() -> None:
    """encode keeps UTF-8 when it can and falls back to ASCII escapes when it cannot."""
    assert jsonbody.encode({"t": "café"}) == '{"t":"café"}'.encode()
    assert jsonbody.encode({"t": ANSWER}) == b'{"t":"half a pair \\ud83d then caf\\u00e9"}'


async def test_both_doors_answer_text_holding_a_lone_surrogate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Messages and chat-completions doors send the answer whole; the SDKs read it back."""
    provider = ScriptedProvider({CHEAP: [Reply.answer(ANSWER), Reply.answer(ANSWER)]})
    async with running_server(
        make_settings(), scorer=StaticScorer((0.95, 0.03, 0.02)), provider=provider, http=True
    ) as served:
        async with anthropic.AsyncAnthropic(
            base_url=served.http_url, api_key="any", max_retries=0
        ) as messages_sdk:
            message = await messages_sdk.messages.create(
                model=CHEAP, max_tokens=64, messages=QUESTION
            )
        async with openai.AsyncOpenAI(
            base_url=f"{served.http_url}/v1", api_key="any", max_retries=0
        ) as chat_sdk:
            completion = await chat_sdk.chat.completions.create(model=CHEAP, messages=QUESTION)
    assert [b.text for b in message.content if b.type == "text"] == [ANSWER]
    assert completion.choices[0].message.content == ANSWER
    assert_no_traceback(caplog)
