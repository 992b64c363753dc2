"""End to end: the server exports its traces over real OTLP to an in-process collector.

The collector implements OpenTelemetry's `TraceService` (the protocol Jaeger receives) from
the `opentelemetry-proto` package; the tests read the spans off the wire. Telemetry is built
by `observability.setup`, the same path `tierroute serve` takes, with a BatchSpanProcessor that
the tests force-flush.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.helpers import make_settings, running_server
from tierroute import observability
from tierroute.observability.names import SPAN_ROUTE
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

QUESTION = "What is the capital of France?"
SETTINGS = make_settings()
CHEAP, MID, TOP = (t.model for t in SETTINGS.tiers)


@dataclass
class Collector:
    """What an OTLP collector received: every ExportTraceServiceRequest, in order."""

    requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def spans(self) -> list[trace_pb2.Span]:
        with self.lock:
            return [
                span
                for request in self.requests
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                attributes(rs.resource.attributes)
                for request in self.requests
                for rs in request.resource_spans
            ]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._collector.receive(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def grpc_collector() -> Iterator[tuple[Collector, int]]:
    """An OTLP/gRPC collector on 127.0.0.1:0; a thread pool, since the exporter is blocking."""
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(collector), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, port
    finally:
        server.stop(0).wait()


@contextmanager
def http_collector() -> Iterator[tuple[Collector, int]]:
    """An OTLP/HTTP (protobuf) collector on 127.0.0.1:0 answering POST /v1/traces."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            collector.receive(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what arrived, not the access log."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def describe(span: trace_pb2.Span) -> str:
    a = attributes(span.attributes)
    if span.kind == trace_pb2.Span.SPAN_KIND_SERVER:
        text = (
            f"{span.name} [server] tier={a['tierroute.tier']} judge={a['tierroute.judge_status']}"
        )
    elif span.name == SPAN_ROUTE:
        text = f"{span.name} tier={a['tierroute.tier']} strategy={a['tierroute.strategy']}"
    else:
        text = (
            f"{span.name} {a['tierroute.tier']} ({a['gen_ai.request.model']})"
            f" {a['tierroute.outcome']}"
        )
        if "gen_ai.usage.input_tokens" in a:
            text += (
                f" {a['gen_ai.usage.input_tokens']}+{a['gen_ai.usage.output_tokens']} tok"
                f" ${a['tierroute.cost_usd']:.6f}"
            )
        if "tierroute.verdict" in a:
            text += f" verdict={a['tierroute.verdict']}"
        if a["tierroute.speculative"]:
            text += " speculative"
    if span.status.code == trace_pb2.Status.STATUS_CODE_ERROR:
        text += " ERROR"
    return text


def render_tree(spans: Sequence[trace_pb2.Span]) -> str:
    """One trace as an indented tree, children in start order, events under their span."""
    by_parent: dict[bytes, list[trace_pb2.Span]] = {}
    for span in spans:
        by_parent.setdefault(span.parent_span_id, []).append(span)
    lines: list[str] = []

    def walk(span: trace_pb2.Span, prefix: str, last: bool, root: bool) -> None:
        lines.append(
            describe(span) if root else f"{prefix}{'└── ' if last else '├── '}{describe(span)}"
        )
        inner = "" if root else prefix + ("    " if last else "│   ")
        children = sorted(by_parent.get(span.span_id, []), key=lambda s: s.start_time_unix_nano)
        for event in span.events:
            detail = attributes(event.attributes)
            shown = {
                k.removeprefix("tierroute."): v
                for k, v in detail.items()
                if k != "tierroute.detail"
            }
            rest = " ".join(f"{k}={v}" for k, v in sorted(shown.items()))
            lines.append(f"{inner}  * event {event.name} {rest}")
        for i, child in enumerate(children):
            walk(child, inner, i == len(children) - 1, False)

    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    walk(roots[0], "", True, True)
    return "\n".join(lines)


def traces(spans: Sequence[trace_pb2.Span]) -> list[list[trace_pb2.Span]]:
    """Spans grouped by trace, in the order the traces started."""
    grouped: dict[bytes, list[trace_pb2.Span]] = {}
    for span in sorted(spans, key=lambda s: s.start_time_unix_nano):
        grouped.setdefault(span.trace_id, []).append(span)
    return list(grouped.values())


def scripted() -> ScriptedProvider:
    """Request 1 passes on cheap (its speculative mid call is cancelled); request 2 escalates."""
    held = asyncio.Event()
    return ScriptedProvider(
        answers={
            CHEAP: [
                Reply.answer("a", input_tokens=120, output_tokens=30),
                Reply.answer("b", input_tokens=120, output_tokens=30),
            ],
            MID: [
                Reply.answer("never sent", gate=held),
                Reply.answer("c", input_tokens=150, output_tokens=60),
            ],
        },
        judges={
            MID: [
                Reply.verdict(True, input_tokens=300, output_tokens=12),
                Reply.verdict(False, ["incomplete"], input_tokens=300, output_tokens=15),
            ],
            TOP: [Reply.verdict(True, input_tokens=340, output_tokens=10)],
        },
    )


@asynccontextmanager
async def exporting_server(
    environ: dict[str, str],
) -> AsyncIterator[tuple[Any, observability.Telemetry]]:
    """A real server whose tracer provider comes from `observability.setup` in otlp mode."""
    settings = make_settings({"TIERROUTE_TELEMETRY_MODE": "otlp"})
    tel = observability.setup(settings, environ)
    assert tel.tracer_provider is not None
    try:
        async with running_server(
            settings,
            scorer=StaticScorer((0.9, 0.07, 0.03)),
            provider=scripted(),
            tracer_provider=tel.tracer_provider,
        ) as running:
            yield running.stub, tel
    finally:
        await asyncio.to_thread(tel.shutdown)


async def two_cascades(stub: Any) -> None:
    for request_id in ("req-pass", "req-escalate"):
        await stub.Cascade(
            pb.CascadeRequest(
                query=QUESTION,
                request_id=request_id,
                strategy=pb.STRATEGY_HEURISTIC,
                judge_mode=pb.JUDGE_MODE_ALWAYS,
                speculation=pb.SPECULATION_MODE_ON,
            )
        )


PASS_TREE = """\
/tierroute.v1.TierRouter/Cascade [server] tier=cheap judge=passed
├── tierroute.route tier=cheap strategy=heuristic
├── tierroute.answer cheap (claude-haiku-4-5) ok 120+30 tok $0.000270
├── tierroute.answer mid (claude-sonnet-4-6) cancelled speculative
│     * event tierroute.cancelled cancel_reason=speculation_not_needed speculative=True
└── tierroute.judge mid (claude-sonnet-4-6) ok 300+12 tok $0.001080 verdict=pass"""

ESCALATE_TREE = """\
/tierroute.v1.TierRouter/Cascade [server] tier=mid judge=passed
  * event tierroute.escalation from_tier=cheap reason=JUDGE_FAILED to_tier=mid
├── tierroute.route tier=cheap strategy=heuristic
├── tierroute.answer cheap (claude-haiku-4-5) ok 120+30 tok $0.000270
├── tierroute.answer mid (claude-sonnet-4-6) ok 150+60 tok $0.001350 speculative
├── tierroute.judge mid (claude-sonnet-4-6) ok 300+15 tok $0.001125 verdict=fail
└── tierroute.judge expensive (claude-opus-4-8) ok 340+10 tok $0.001950 verdict=pass"""


async def test_spans_arrive_over_otlp_grpc() -> None:
    """Two cascades exported over OTLP/gRPC arrive as two traces with the expected trees."""
    with grpc_collector() as (collector, port):
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        async with exporting_server(environ) as (stub, tel):
            await two_cascades(stub)
            # The exporter blocks on the network; flush off the event loop that serves.
            assert await asyncio.to_thread(tel.force_flush)
        spans = collector.spans()
    passed, escalated = traces(spans)
    assert render_tree(passed) == PASS_TREE
    assert render_tree(escalated) == ESCALATE_TREE


async def test_wire_spans_keep_parent_links_and_resource() -> None:
    """On the wire every span of a request shares one trace id and hangs off the server span."""
    with grpc_collector() as (collector, port):
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        async with exporting_server(environ) as (stub, tel):
            await two_cascades(stub)
            assert await asyncio.to_thread(tel.force_flush)
        spans = collector.spans()
        resources = collector.resources()
    for trace_spans in traces(spans):
        (server,) = [s for s in trace_spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
        assert not server.parent_span_id
        assert {s.parent_span_id for s in trace_spans if s is not server} == {server.span_id}
    assert {r["service.name"] for r in resources} == {"tierroute"}
    # Five spans for the first request and six for the escalated one.
    assert len(spans) == 11


async def test_spans_arrive_over_otlp_http() -> None:
    """With OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf the same spans arrive at /v1/traces."""
    with http_collector() as (collector, port):
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        async with exporting_server(environ) as (stub, tel):
            await two_cascades(stub)
            assert await asyncio.to_thread(tel.force_flush)
        spans = collector.spans()
    passed, escalated = traces(spans)
    assert render_tree(passed) == PASS_TREE
    assert render_tree(escalated) == ESCALATE_TREE
