"""The HTTP endpoint as part of the server: the query log, tracing, the shared in-flight bound,
a client that leaves, graceful shutdown, and the endpoint turned off; through the official
`anthropic` SDK against scripted providers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.helpers import Running, acme_tokens, make_settings, read_all, running_server
from tierroute.api.server import TierRouteServer
from tierroute.errors import ConfigError
from tierroute.observability.names import SPAN_ANSWER, SPAN_ROUTE
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import SqliteStore
from tierroute.settings import Settings
from tierroute.testing import StaticScorer

EASY = StaticScorer((0.95, 0.03, 0.02))
CHEAP = "claude-haiku-4-5"
QUESTION = "Which river flows through the capital of France, and how long is it?"
TOKEN = "acme-edge-token"


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


def _client(served: Running, **kwargs: Any) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=served.http_url, api_key=TOKEN, **kwargs)


def _ask(client: anthropic.AsyncAnthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", [{"role": "user", "content": QUESTION}])
    kwargs.setdefault("model", "tierroute")
    return client.messages.create(max_tokens=256, **kwargs)


async def test_calls_are_logged_as_grpc_calls_are(tmp_path: Path) -> None:
    """An answered and a refused HTTP call land in the query log, the token's tenant's."""
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
        await _ask(client, extra_headers={"x-tierroute-request-id": "http-log-ok"})
        with pytest.raises(anthropic.BadRequestError):
            await _ask(
                client,
                stop_sequences=[" "],
                extra_headers={"x-tierroute-request-id": "http-log-bad"},
            )
    by_id = {r.request_id: r for r in await read_all(SqliteStore(tmp_path / "log.sqlite3"))}
    ok, bad = by_id["http-log-ok"], by_id["http-log-bad"]
    assert (ok.kind, ok.status, ok.final_tier, ok.tenant_id) == ("cascade", "OK", "cheap", "acme")
    assert ok.query_text is None
    assert (bad.status, bad.tenant_id) == ("INVALID_ARGUMENT", "acme")


async def test_each_request_has_a_server_span_over_the_cascades_spans(tmp_path: Path) -> None:
    """One SERVER span per request, parent of the routing and tier spans, without the prompt."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = ScriptedProvider({CHEAP: [Reply.answer("The Seine, 777 km.")]})
    try:
        async with (
            running_server(
                _settings(tmp_path),
                scorer=EASY,
                provider=provider,
                tracer_provider=tracer_provider,
                http=True,
            ) as served,
            _client(served) as client,
        ):
            await _ask(client)
    finally:
        tracer_provider.shutdown()
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/messages"
    assert server.context is not None
    children = {s.name for s in spans if s.parent and s.parent.span_id == server.context.span_id}
    assert {SPAN_ROUTE, SPAN_ANSWER} <= children
    for span in spans:
        for value in (span.attributes or {}).values():
            assert "Seine" not in str(value)
            assert "river" not in str(value)


async def test_the_in_flight_bound_is_shared_and_refuses_with_529(tmp_path: Path) -> None:
    """With one call in flight and a bound of one, the next is a 529 overloaded_error."""
    gate = asyncio.Event()
    provider = ScriptedProvider({CHEAP: [Reply.answer("held", gate=gate), Reply.answer("next")]})
    settings = _settings(tmp_path, TIERROUTE_SERVER_MAX_IN_FLIGHT="1")
    async with (
        running_server(settings, scorer=EASY, provider=provider, http=True) as served,
        _client(served) as client,
    ):
        held = asyncio.create_task(_ask(client))
        await provider.wait_for_calls(1)
        with pytest.raises(anthropic.OverloadedError):
            await _ask(client)
        assert served.server.admission.refused == 1
        gate.set()
        assert (await held).content[0].text == "held"
        assert (await _ask(client)).content[0].text == "next"


async def test_a_client_that_leaves_cancels_its_provider_call(tmp_path: Path) -> None:
    """The SDK giving up on a call closes its connection, and the provider call is cancelled."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("never", gate=asyncio.Event())]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as served,
        _client(served, timeout=0.5) as client,
    ):
        with pytest.raises(anthropic.APITimeoutError):
            await _ask(client)
        await provider.wait_settled()
        (call,) = provider.calls
        assert call.cancelled


async def test_a_client_that_leaves_a_stream_cancels_its_provider_call(tmp_path: Path) -> None:
    """Closing a stream mid-answer cancels the provider's stream too."""
    mid = asyncio.Event()
    provider = ScriptedProvider(
        {CHEAP: [Reply.answer("one two three", deltas=("one ", "two three"), mid_gate=mid)]}
    )
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as served,
        _client(served) as client,
    ):
        stream = await _ask(client, stream=True)
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
        await provider.wait_settled()
        (call,) = provider.calls
        assert call.cancelled


async def test_shutdown_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    """Stopping the server waits, within the grace period, for an HTTP answer in flight."""
    gate = asyncio.Event()
    provider = ScriptedProvider({CHEAP: [Reply.answer("finished", gate=gate)]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as served,
        _client(served) as client,
    ):
        held = asyncio.create_task(_ask(client))
        await provider.wait_for_calls(1)
        stopping = asyncio.create_task(served.server.stop(grace_s=30))
        await asyncio.sleep(0)  # a yield, so that stop() has begun before the answer comes
        gate.set()
        message = await held
        await stopping
    assert message.content[0].text == "finished"


async def test_port_zero_in_the_settings_turns_the_endpoint_off() -> None:
    """http.port = 0 (the tests' default) serves gRPC alone."""
    async with running_server(make_settings(), scorer=EASY) as served:
        assert served.server.http_port == 0


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[Running]:
    """A server with the endpoint and no tokens file (authentication off)."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("open")]})
    async with running_server(
        make_settings({"TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0"}),
        scorer=EASY,
        provider=provider,
        http=True,
    ) as served:
        yield served


async def test_without_a_tokens_file_any_key_is_accepted(bare: Running) -> None:
    """With authentication off, the SDK's key is not checked, as on gRPC."""
    async with anthropic.AsyncAnthropic(
        base_url=bare.http_url, api_key="anything", max_retries=0
    ) as client:
        message = await _ask(client)
    assert message.content[0].text == "open"


class PointedScorer(StaticScorer):
    """A scorer whose model ships named operating points, as a calibrated bundle does."""

    operating_points = ("q90", "q95")


async def test_operating_points_are_listed_and_an_unknown_one_names_them() -> None:
    """`tierroute@NAME` is listed for each shipped point; another name is a 400 naming them."""
    provider = ScriptedProvider()
    async with (
        running_server(
            make_settings(), scorer=PointedScorer((0.95, 0.03, 0.02)), provider=provider, http=True
        ) as served,
        _client(served) as client,
    ):
        ids = [m.id for m in (await client.models.list()).data]
        with pytest.raises(anthropic.BadRequestError, match="q90, q95"):
            await _ask(client, model="tierroute@q99")
    assert ids[:3] == ["tierroute", "tierroute@q90", "tierroute@q95"]
    assert provider.calls == []


async def test_a_quiet_stream_sends_pings_until_the_answer_goes_on(tmp_path: Path) -> None:
    """While the answering call pauses mid-answer, the stream sends Anthropic's ping events."""
    mid = asyncio.Event()
    provider = ScriptedProvider(
        {CHEAP: [Reply.answer("one two", deltas=("one ", "two"), mid_gate=mid)]}
    )
    settings = make_settings({"TIERROUTE_HTTP_PING_INTERVAL_S": "0.05"})
    async with running_server(settings, scorer=EASY, provider=provider, http=True) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.http_port)
        body = json.dumps(
            {
                "model": CHEAP,
                "max_tokens": 64,
                "stream": True,
                "messages": [{"role": "user", "content": QUESTION}],
            }
        ).encode()
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: tierroute\r\nconnection: close\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        seen = b""
        while b'"text":"one "' not in seen or seen.count(b"event: ping") < 3:
            chunk = await reader.read(4096)
            assert chunk, f"the stream ended before its pings: {seen!r}"
            seen += chunk
        mid.set()
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
    # One ping follows message_start; the others came while the answer was paused.
    assert seen.split(b'"text":"one "', 1)[1].count(b"event: ping") >= 1
    assert b'{"type":"ping"}' in seen
    assert b"event: message_stop" in seen + rest


async def test_an_http_port_in_use_fails_start_up_in_one_line() -> None:
    """The HTTP port taken is a ConfigError naming it, and nothing is left running."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = TierRouteServer(make_settings(), scorer=EASY, provider=ScriptedProvider())
        with pytest.raises(ConfigError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
            await server.start("127.0.0.1", 0, http_port=port)
        assert server.http_port == 0


async def test_the_timeout_the_sdk_announces_is_the_requests_deadline(tmp_path: Path) -> None:
    """x-stainless-timeout bounds the Cascade: a tier that never answers ends in a 504."""
    provider = ScriptedProvider({CHEAP: [Reply.answer("never", gate=asyncio.Event())]})
    async with (
        running_server(_settings(tmp_path), scorer=EASY, provider=provider, http=True) as served,
        _client(served, timeout=60) as client,
    ):
        with pytest.raises(anthropic.GatewayTimeoutError) as caught:
            await _ask(client, model=CHEAP, extra_headers={"x-stainless-timeout": "0.5"})
        await provider.wait_settled()
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "timeout_error"
    (call,) = provider.calls
    assert call.cancelled
