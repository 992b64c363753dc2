"""An upstream answer whose text holds a lone UTF-16 surrogate (which no request may hold, but
a provider's JSON can) is still answered on both HTTP doors and on gRPC: the provider adapter
replaces the surrogate with U+FFFD, and the HTTP doors' bodies are written with `\\u` escapes
should one still reach them; where it was a 500 or INTERNAL with a traceback. A scripted
provider on the real server on port 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.api.hostile_bodies import assert_no_traceback
from tests.helpers import make_settings, running_server
from tierroute.api import jsonbody
from tierroute.providers.base import clean_text
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import open_store
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP = "claude-haiku-4-5"
ANSWER = "half a pair \ud83d then café"
CLEANED = "half a pair \ufffd then café"
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
    assert [b.text for b in message.content if b.type == "text"] == [CLEANED]
    assert completion.choices[0].message.content == CLEANED
    assert_no_traceback(caplog)


def test_clean_text_replaces_only_lone_surrogates() -> None:
    """A lone surrogate becomes U+FFFD, a split pair its character, other text is kept."""
    assert clean_text(ANSWER) == CLEANED
    assert clean_text("\udc00 and \ud83d\ude00") == "\ufffd and \U0001f600"
    assert clean_text("plain café") == "plain café"


async def test_grpc_cascade_answers_text_holding_a_lone_surrogate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cascade answers OK with U+FFFD in place of the surrogate, and the query log keeps the row."""
    database = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": database,
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    provider = ScriptedProvider({CHEAP: [Reply.answer(ANSWER)]})
    async with running_server(
        settings, scorer=StaticScorer((0.95, 0.03, 0.02)), provider=provider
    ) as served:
        reply = await served.stub.Cascade(
            pb.CascadeRequest(query="Say something odd.", judge_mode=pb.JUDGE_MODE_NEVER)
        )
    store = open_store(database)
    try:
        (record,) = await store.fetch_queries()
    finally:
        await store.aclose()
    assert reply.answer == CLEANED
    assert record.request_id == reply.request_id
    assert_no_traceback(caplog)
