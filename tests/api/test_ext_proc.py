"""Envoy's external processor, through the real server and a client that speaks ext_proc
as Envoy's filter does (tests/api/envoy_filter.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.api.envoy_filter import ExtProcFilter, Headers
from tests.helpers import make_settings, running_server
from tierroute.api.dataplane.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as mode_pb,
)
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from tierroute.api.ext_proc import SERVICE_NAME
from tierroute.api.security import hash_token
from tierroute.querylog import QueryRecord, open_store
from tierroute.routing import Scorer
from tierroute.testing import FailingScorer, StaticScorer

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
EASY = StaticScorer((0.95, 0.03, 0.02))
HARD = StaticScorer((0.02, 0.03, 0.95))
TOKEN = "mesh-token-5e1f"


def _body(model: str = TOP, **extra: Any) -> bytes:
    request = {
        "model": model,
        "max_tokens": 256,
        "system": "Answer briefly.",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "temperature": 0.2,
        **extra,
    }
    return json.dumps(request).encode()


class Anthropic:
    """The upstream: remembers the request it got and answers like the Messages API."""

    def __init__(self) -> None:
        self.calls: list[tuple[Headers, bytes]] = []

    def __call__(self, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        self.calls.append((headers, body))
        return 200, {"content-type": "application/json"}, b'{"type":"message"}'

    @property
    def json(self) -> dict[str, Any]:
        (_, body), *_ = self.calls
        parsed: dict[str, Any] = json.loads(body)
        return parsed


@asynccontextmanager
async def _processor(
    tmp_path: Path, scorer: Scorer = EASY, **env: str
) -> AsyncIterator[aio.Channel]:
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
            "TIERROUTE_QUERYLOG_FLUSH_INTERVAL_S": "0.05",
            **env,
        }
    )
    async with running_server(settings, scorer=scorer) as s:
        yield s.channel


async def _records(tmp_path: Path) -> list[QueryRecord]:
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        return list(await store.fetch_queries())
    finally:
        await store.aclose()


def _messages(filter_: ExtProcFilter, upstream: Anthropic, body: bytes, **kw: Any) -> Any:
    return filter_.request("POST", "/v1/messages", upstream, body=body, **kw)


async def test_model_is_rewritten_to_the_routed_tier(tmp_path: Path) -> None:
    """A Messages request for the top model goes upstream for the routed tier's model."""
    upstream = Anthropic()
    async with _processor(tmp_path) as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, _body(TOP))
    sent = upstream.json
    assert sent["model"] == CHEAP
    assert {k: v for k, v in sent.items() if k != "model"} == {
        k: v for k, v in json.loads(_body(TOP)).items() if k != "model"
    }
    assert seen.status == 200
    assert seen.upstream_headers is not None
    assert seen.upstream_headers["content-length"] == str(len(seen.upstream_body or b""))


async def test_tier_headers_go_upstream_and_back_to_the_client(tmp_path: Path) -> None:
    """The tier, model, strategy and Envoy's request id reach the upstream and the client."""
    upstream = Anthropic()
    async with _processor(tmp_path) as channel:
        seen = await _messages(
            ExtProcFilter(channel), upstream, _body(), headers={"x-request-id": "req-42"}
        )
    expected = {
        "x-tierroute-tier": "cheap",
        "x-tierroute-model": CHEAP,
        "x-tierroute-strategy": "classifier",
        "x-tierroute-request-id": "req-42",
    }
    assert seen.upstream_headers is not None
    assert expected.items() <= seen.upstream_headers.items()
    assert expected.items() <= seen.client_headers.items()


async def test_routing_clears_the_route_cache(tmp_path: Path) -> None:
    """The body response clears Envoy's route cache so routes can match the new headers."""
    async with _processor(tmp_path) as channel:
        seen = await _messages(ExtProcFilter(channel), Anthropic(), _body())
    assert seen.cleared_route_cache


async def test_hard_query_is_routed_up(tmp_path: Path) -> None:
    """A request for the cheap model whose query needs the top tier goes to the top model."""
    upstream = Anthropic()
    async with _processor(tmp_path, HARD) as channel:
        await _messages(ExtProcFilter(channel), upstream, _body(CHEAP))
    assert upstream.json["model"] == TOP


async def test_unfamiliar_query_goes_to_the_reference_tier(tmp_path: Path) -> None:
    """An unfamiliar query under on_unfamiliar = check: nothing checks what the upstream
    answers, so it goes to the reference tier (mid here), not the cheapest."""
    upstream = Anthropic()
    unfamiliar = StaticScorer((0.95, 0.03, 0.02), familiarity=0.05, familiarity_threshold=0.3)
    async with _processor(tmp_path, unfamiliar, TIERROUTE_ROUTING_REFERENCE_TIER="mid") as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, _body(TOP))
    assert upstream.json["model"] == MID
    assert seen.client_headers["x-tierroute-tier"] == "mid"


async def test_body_already_naming_the_routed_model_is_left_as_sent(tmp_path: Path) -> None:
    """When the routed model is the one asked for, the body goes upstream byte for byte."""
    upstream = Anthropic()
    body = _body(CHEAP)
    async with _processor(tmp_path) as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, body)
    assert seen.upstream_body == body
    assert seen.upstream_headers is not None
    assert seen.upstream_headers["x-tierroute-tier"] == "cheap"


async def test_alias_is_routed_when_named_models_are_not(tmp_path: Path) -> None:
    """With route_named_models off, `tierroute` is routed and a concrete model passes as sent."""
    upstream = Anthropic()
    async with _processor(tmp_path, TIERROUTE_EXT_PROC_ROUTE_NAMED_MODELS="false") as channel:
        filter_ = ExtProcFilter(channel)
        await _messages(filter_, upstream, _body("tierroute"))
        named = await _messages(filter_, upstream, _body(TOP))
    assert json.loads(upstream.calls[0][1])["model"] == CHEAP
    assert upstream.calls[1][1] == _body(TOP)
    assert named.upstream_headers is not None
    assert "x-tierroute-tier" not in named.upstream_headers


async def test_routed_request_is_logged_as_a_route_call(tmp_path: Path) -> None:
    """Each routed request lands in the query log with Envoy's request id and its tier."""
    async with _processor(tmp_path) as channel:
        await _messages(
            ExtProcFilter(channel), Anthropic(), _body(), headers={"x-request-id": "req-7"}
        )
    (record,) = await _records(tmp_path)
    assert (record.request_id, record.kind, record.chosen_tier) == ("req-7", "route", "cheap")
    assert record.query_text is None


async def test_other_paths_pass_without_their_body_being_read(tmp_path: Path) -> None:
    """GET /v1/models and count_tokens pass untouched; Envoy is told to skip their body."""
    upstream = Anthropic()
    async with _processor(tmp_path) as channel:
        filter_ = ExtProcFilter(channel)
        models = await filter_.request("GET", "/v1/models", upstream)
        count = await filter_.request(
            "POST", "/v1/messages/count_tokens", upstream, body=_body(TOP)
        )
    assert models.phases == ["request_headers"]
    assert count.phases == ["request_headers"]
    assert upstream.calls[1][1] == _body(TOP)
    assert "x-tierroute-tier" not in upstream.calls[1][0]
    assert await _records(tmp_path) == []


async def test_client_sent_tierroute_headers_are_removed(tmp_path: Path) -> None:
    """A client cannot hand the upstream (or Envoy's routes) a tier header of its own."""
    upstream = Anthropic()
    async with _processor(tmp_path) as channel:
        await ExtProcFilter(channel).request(
            "GET", "/v1/models", upstream, headers={"x-tierroute-tier": "expensive"}
        )
    assert "x-tierroute-tier" not in upstream.calls[0][0]


async def test_malformed_body_passes_unchanged_when_failing_open(tmp_path: Path) -> None:
    """Failing open, a body that is not JSON reaches the upstream as sent, marked with the error."""
    upstream = Anthropic()
    async with _processor(tmp_path) as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, b"{not json")
    assert seen.upstream_body == b"{not json"
    assert seen.upstream_headers is not None
    assert seen.upstream_headers["x-tierroute-error"] == "invalid_request_error"
    assert seen.client_headers["x-tierroute-error"] == "invalid_request_error"
    (record,) = await _records(tmp_path)
    assert record.status == "INVALID_ARGUMENT"


async def test_malformed_body_is_answered_400_when_failing_closed(tmp_path: Path) -> None:
    """Failing closed, Envoy answers a non-Messages body with Anthropic's 400 error JSON."""
    upstream = Anthropic()
    async with _processor(tmp_path, TIERROUTE_EXT_PROC_FAILURE_MODE="closed") as channel:
        seen = await _messages(
            ExtProcFilter(channel), upstream, json.dumps({"model": TOP}).encode()
        )
    assert upstream.calls == []
    assert seen.status == 400
    assert seen.client_headers["content-type"] == "application/json"
    error = json.loads(seen.client_body)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "messages" in error["error"]["message"]


async def test_too_long_query_is_answered_413_when_failing_closed(tmp_path: Path) -> None:
    """Failing closed, a query over limits.max_query_chars gets request_too_large."""
    body = json.dumps({"model": TOP, "messages": [{"role": "user", "content": "x" * 200}]})
    async with _processor(
        tmp_path, TIERROUTE_EXT_PROC_FAILURE_MODE="closed", TIERROUTE_LIMITS_MAX_QUERY_CHARS="100"
    ) as channel:
        seen = await _messages(ExtProcFilter(channel), Anthropic(), body.encode())
    assert seen.status == 413
    assert json.loads(seen.client_body)["error"]["type"] == "request_too_large"


async def test_router_failure_passes_the_request_when_failing_open(tmp_path: Path) -> None:
    """Failing open, a broken router lets the request through unchanged, revealing nothing."""
    upstream = Anthropic()
    async with _processor(tmp_path, FailingScorer()) as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, _body(TOP))
    assert seen.upstream_body == _body(TOP)
    assert seen.client_headers["x-tierroute-error"] == "api_error"
    (record,) = await _records(tmp_path)
    assert record.status == "INTERNAL"


async def test_router_failure_is_answered_500_when_failing_closed(tmp_path: Path) -> None:
    """Failing closed, a broken router gets Anthropic's api_error with no internals."""
    upstream = Anthropic()
    async with _processor(
        tmp_path, FailingScorer(), TIERROUTE_EXT_PROC_FAILURE_MODE="closed"
    ) as channel:
        seen = await _messages(ExtProcFilter(channel), upstream, _body(TOP))
    assert upstream.calls == []
    assert seen.status == 500
    assert json.loads(seen.client_body)["error"]["type"] == "api_error"
    assert b"secret internals" not in seen.client_body


async def test_unknown_strategy_header_is_refused(tmp_path: Path) -> None:
    """An x-tierroute-strategy naming no routing strategy is the caller's error (400)."""
    async with _processor(tmp_path, TIERROUTE_EXT_PROC_FAILURE_MODE="closed") as channel:
        seen = await _messages(
            ExtProcFilter(channel),
            Anthropic(),
            _body(),
            headers={"x-tierroute-strategy": "self_routing"},
        )
    assert seen.status == 400


async def test_heuristic_strategy_header_is_honoured(tmp_path: Path) -> None:
    """x-tierroute-strategy: heuristic routes with the heuristic and says so."""
    async with _processor(tmp_path) as channel:
        seen = await _messages(
            ExtProcFilter(channel),
            Anthropic(),
            _body(),
            headers={"x-tierroute-strategy": "heuristic"},
        )
    assert seen.client_headers["x-tierroute-strategy"] == "heuristic"


async def test_streamed_body_chunks_are_refused(tmp_path: Path) -> None:
    """A body sent in chunks (STREAMED mode) cannot be rewritten: the request is refused."""
    async with _processor(tmp_path, TIERROUTE_EXT_PROC_FAILURE_MODE="closed") as channel:
        filter_ = ExtProcFilter(channel, body_mode=mode_pb.ProcessingMode.STREAMED)
        seen = await _messages(filter_, Anthropic(), _body())
    assert seen.status == 400
    assert "BUFFERED" in json.loads(seen.client_body)["error"]["message"]


async def test_message_without_a_phase_ends_the_stream_invalid(tmp_path: Path) -> None:
    """A ProcessingRequest that carries no phase ends the stream with INVALID_ARGUMENT."""
    async with _processor(tmp_path) as channel:
        call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
        await call.write(ep.ProcessingRequest())
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT


def _auth_env(tmp_path: Path) -> Mapping[str, str]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {"mesh": [hash_token(TOKEN)]}}))
    return {"TIERROUTE_AUTH_TOKENS_FILE": str(tokens)}


async def test_stream_without_a_token_is_unauthenticated(tmp_path: Path) -> None:
    """With tokens configured, a Process stream without a bearer token is refused."""
    async with _processor(tmp_path, **_auth_env(tmp_path)) as channel:
        with pytest.raises(aio.AioRpcError) as refused:
            await _messages(ExtProcFilter(channel), Anthropic(), _body())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_token_tenant_is_the_logged_tenant(tmp_path: Path) -> None:
    """Envoy's bearer token admits the stream, and its tenant owns the logged call."""
    upstream = Anthropic()
    metadata = [("authorization", f"Bearer {TOKEN}")]
    async with _processor(tmp_path, **_auth_env(tmp_path)) as channel:
        await _messages(ExtProcFilter(channel, metadata=metadata), upstream, _body())
    assert upstream.json["model"] == CHEAP
    (record,) = await _records(tmp_path)
    assert record.tenant_id == "mesh"


async def test_processor_can_be_turned_off(tmp_path: Path) -> None:
    """With ext_proc.enabled off the service is not served (UNIMPLEMENTED)."""
    async with _processor(tmp_path, TIERROUTE_EXT_PROC_ENABLED="false") as channel:
        with pytest.raises(aio.AioRpcError) as off:
            await _messages(ExtProcFilter(channel), Anthropic(), _body())
    assert off.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_routing_is_traced_under_the_process_span_without_text(tmp_path: Path) -> None:
    """With tracing on, the stream's RPC span holds the route span; no prompt text is in them."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        async with running_server(
            make_settings(), scorer=EASY, tracer_provider=tracer_provider
        ) as s:
            await _messages(ExtProcFilter(s.channel), Anthropic(), _body())
    finally:
        tracer_provider.shutdown()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    process = spans[f"/{SERVICE_NAME}/Process"]
    route = spans["tierroute.route"]
    assert route.parent is not None
    assert route.parent.span_id == process.context.span_id
    assert not any("2+2" in str(v) for sp in spans.values() for v in (sp.attributes or {}).values())
