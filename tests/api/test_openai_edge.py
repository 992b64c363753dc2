"""The OpenAI-compatible door's share of the edge, with scripted providers: the query log,
operating points, finish reasons and cached tokens, and pings in a quiet stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers import Running, acme_tokens, make_settings, read_all, running_server
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import SqliteStore
from tierroute.settings import Settings
from tierroute.testing import StaticScorer

EASY = StaticScorer((0.95, 0.03, 0.02))
CHEAP = "claude-haiku-4-5"
QUESTION = "Which river flows through the capital of France, and how long is it?"
TOKEN = "acme-openai-edge-token"


class PointedScorer(StaticScorer):
    """A scorer whose model ships named operating points, as a calibrated bundle does."""

    operating_points = ("q90", "q95")


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return make_settings(
        {
            "TIERROUTE_AUTH_TOKENS_FILE": str(acme_tokens(tmp_path, TOKEN)),
            # Nothing judged or run ahead: each test scripts the cheap tier's answer alone.
            "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0",
            "TIERROUTE_CASCADE_USE_MODEL_CALIBRATION": "false",
            **extra,
        }
    )


def _client(served: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{served.http_url}/v1", api_key=TOKEN, max_retries=0)


def _ask(client: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", [{"role": "user", "content": QUESTION}])
    kwargs.setdefault("model", "tierroute")
    return client.chat.completions.create(**kwargs)


async def test_calls_are_logged_as_the_messages_doors_are(tmp_path: Path) -> None:
    """An answered and a refused chat completion land in the query log, the token's tenant's."""
    settings = _settings(
        tmp_path,
        TIERROUTE_QUERYLOG_ENABLED="true",
        TIERROUTE_DB_URL=f"sqlite:///{tmp_path / 'log.sqlite3'}",
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(tmp_path / "log.spool.jsonl"),
        TIERROUTE_QUERYLOG_FLUSH_INTERVAL_S="0.05",
    )
    provider = ScriptedProvider({CHEAP: [Reply.answer("The Seine, 777 km.")]})
    async with (
        running_server(settings, scorer=EASY, provider=provider, http=True) as served,
        _client(served) as client,
    ):
        await _ask(client, extra_headers={"x-tierroute-request-id": "chat-log-ok"})
        with pytest.raises(openai.BadRequestError):
            await _ask(client, stop=[" "], extra_headers={"x-tierroute-request-id": "chat-log-bad"})
    by_id = {r.request_id: r for r in await read_all(SqliteStore(tmp_path / "log.sqlite3"))}
    ok, bad = by_id["chat-log-ok"], by_id["chat-log-bad"]
    assert (ok.kind, ok.status, ok.final_tier, ok.tenant_id) == ("cascade", "OK", "cheap", "acme")
    assert ok.query_text is None
    assert (bad.status, bad.tenant_id) == ("INVALID_ARGUMENT", "acme")


async def test_an_operating_point_is_served_and_an_unknown_one_names_the_known(
    tmp_path: Path,
) -> None:
    """`tierroute@q95` is answered and listed; `tierroute@q99` is a 400 on `model` naming them."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("The Seine.")]})
    scorer = PointedScorer((0.95, 0.03, 0.02))
    async with (
        running_server(_settings(tmp_path), scorer=scorer, provider=provider, http=True) as s,
        _client(s) as client,
    ):
        ids = [m.id async for m in client.models.list()]
        answered = await _ask(client, model="tierroute@q95")
        with pytest.raises(openai.BadRequestError, match="q90, q95") as caught:
            await _ask(client, model="tierroute@q99")
    assert ids[:3] == ["tierroute", "tierroute@q90", "tierroute@q95"]
    assert answered.choices[0].message.content == "The Seine."
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "model"


async def test_an_answer_cut_at_its_limit_finishes_with_length(tmp_path: Path) -> None:
    """The Messages API's max_tokens stop reason is OpenAI's finish_reason length."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("The Seine is", stop_reason="max_tokens")]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as s,
        _client(s) as client,
    ):
        completion = await _ask(client, model=CHEAP, max_completion_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert provider.calls[0].max_tokens == 3


async def test_cached_prompt_tokens_count_in_the_prompt_and_are_named(tmp_path: Path) -> None:
    """prompt_tokens includes cache reads and writes; cached_tokens names the reads."""
    reply = Reply.answer(
        "The Seine.",
        input_tokens=10,
        output_tokens=4,
        cache_creation_input_tokens=7,
        cache_read_input_tokens=50,
    )
    provider = ScriptedProvider({CHEAP: [reply]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as s,
        _client(s) as client,
    ):
        completion = await _ask(client, model=CHEAP)
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (67, 4, 71)
    assert usage.prompt_tokens_details.cached_tokens == 50


async def test_a_quiet_stream_sends_comment_pings_until_the_answer_goes_on(
    tmp_path: Path,
) -> None:
    """While the answering call pauses mid-answer, the stream sends `: ping` comments."""
    mid = asyncio.Event()
    provider = ScriptedProvider(
        {CHEAP: [Reply.answer("one two", deltas=("one ", "two"), mid_gate=mid)]}
    )
    settings = _settings(tmp_path, TIERROUTE_HTTP_PING_INTERVAL_S="0.05")
    async with running_server(settings, scorer=EASY, provider=provider, http=True) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.http_port)
        body = json.dumps(
            {"model": CHEAP, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        ).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: tierroute\r\nconnection: close\r\n"
            b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (TOKEN.encode(), len(body), body)
        )
        seen = b""
        while b'"content":"one "' not in seen or seen.count(b": ping\n\n") < 2:
            chunk = await reader.read(4096)
            assert chunk, f"the stream ended before its pings: {seen!r}"
            seen += chunk
        mid.set()
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert seen.split(b'"content":"one "', 1)[1].count(b": ping\n\n") >= 1
    assert b"data: [DONE]\n\n" in seen + rest


async def test_the_read_timeout_the_python_sdk_announces_is_the_deadline(tmp_path: Path) -> None:
    """OpenAI's Python SDK announces x-stainless-read-timeout: a tier that never answers
    within it ends in a 504 and its call is cancelled."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("never", gate=asyncio.Event())]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as s,
        openai.AsyncOpenAI(
            base_url=f"{s.http_url}/v1", api_key=TOKEN, max_retries=0, timeout=60
        ) as client,
    ):
        with pytest.raises(openai.APIStatusError) as caught:
            await _ask(client, model=CHEAP, extra_headers={"x-stainless-read-timeout": "0.5"})
        await provider.wait_settled()
    assert caught.value.status_code == 504
    (call,) = provider.calls
    assert call.cancelled
