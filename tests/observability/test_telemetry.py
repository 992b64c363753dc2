"""Traces and metrics: spans through an in-memory exporter, metrics through an in-memory reader.

Every server here is the real one on port 0 with an injected TracerProvider (never the global
one); providers are the scripted double or the real SDK against the replay server.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.fixtures import TRIO, make_record, write_dataset
from tests.helpers import Running, make_settings, running_server
from tierroute import observability
from tierroute.errors import ConfigError, ProviderOverloaded, RateLimited
from tierroute.observability import metrics as m
from tierroute.providers.anthropic import build_provider
from tierroute.providers.base import Provider
from tierroute.providers.replay import FAULT_HEADER, ReplayServer, ReplayStore
from tierroute.providers.scripted import RecordingProvider, Reply, ScriptedProvider
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

# Factual and short: the heuristic routes it to the cheapest tier.
QUESTION = "What is the capital of France?"
ANSWER = "Paris, on the Seine"
BETTER = "Paris is the capital of France"
EASY = StaticScorer((0.9, 0.07, 0.03))
SETTINGS = make_settings()
CHEAP, MID, TOP = (t.model for t in SETTINGS.tiers)
CASCADE_RPC = "/tierroute.v1.TierRouter/Cascade"
ROUTE_RPC = "/tierroute.v1.TierRouter/Route"


@dataclass
class Observed:
    """A server, the spans it exported and the metrics it recorded."""

    running: Running
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every data point of `metric` (histograms: the point)."""
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric_ in scope.metrics:
                    if metric_.name == metric:
                        for p in metric_.data.data_points:
                            value = p if isinstance(p, HistogramDataPoint) else p.value  # type: ignore[union-attr]
                            out.append((dict(p.attributes or {}), value))
        return out


@asynccontextmanager
async def observed_server(
    provider: Provider | None = None,
    environ: Mapping[str, str] | None = None,
    scorer: StaticScorer = EASY,
) -> AsyncIterator[Observed]:
    """A real server whose spans go to an in-memory exporter and metrics to a reader."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    settings = make_settings(environ)
    try:
        async with running_server(
            settings,
            scorer=scorer,
            provider=provider,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ) as running:
            yield Observed(running, exporter, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def cascade(**kwargs: Any) -> pb.CascadeRequest:
    kwargs.setdefault("query", QUESTION)
    kwargs.setdefault("strategy", pb.STRATEGY_HEURISTIC)
    kwargs.setdefault("judge_mode", pb.JUDGE_MODE_ALWAYS)
    kwargs.setdefault("speculation", pb.SPECULATION_MODE_OFF)
    return pb.CascadeRequest(**kwargs)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def passing() -> ScriptedProvider:
    return ScriptedProvider(
        answers={CHEAP: [Reply.answer(ANSWER, input_tokens=1000, output_tokens=100)]},
        judges={MID: [Reply.verdict(True, input_tokens=400, output_tokens=10)]},
    )


def escalating() -> ScriptedProvider:
    return ScriptedProvider(
        answers={CHEAP: [Reply.answer(ANSWER)], MID: [Reply.answer(BETTER)]},
        judges={MID: [Reply.verdict(False, ["names the river too"])], TOP: [Reply.verdict(True)]},
    )


# -- setup: modes, OTLP options, sampling, resource -------------------------------------------


def settings_with(**telemetry_env: str) -> Settings:
    return make_settings({f"TIERROUTE_TELEMETRY_{k.upper()}": v for k, v in telemetry_env.items()})


def test_mode_off_builds_no_providers() -> None:
    """Mode off (the default) builds no tracer or meter provider at all."""
    tel = observability.setup(settings_with(), {})
    assert (tel.tracer_provider, tel.meter_provider, tel.prometheus) == (None, None, None)


def test_sdk_disabled_overrides_the_mode() -> None:
    """OTEL_SDK_DISABLED=true turns tracing off whatever the mode says."""
    tel = observability.setup(settings_with(mode="console"), {"OTEL_SDK_DISABLED": "true"})
    assert tel.tracer_provider is None


def test_console_mode_writes_spans_to_the_stream() -> None:
    """Console mode prints finished spans, as JSON, to the stream it is given."""
    out = io.StringIO()
    tel = observability.setup(settings_with(mode="console"), {}, console_out=out)
    assert tel.tracer_provider is not None
    with tel.tracer_provider.get_tracer("t").start_as_current_span("console-probe"):
        pass
    assert tel.force_flush()
    tel.shutdown()
    assert '"name": "console-probe"' in out.getvalue()


def test_otel_traces_exporter_sets_the_mode() -> None:
    """The standard OTEL_TRACES_EXPORTER selects the mode; TIERROUTE_TELEMETRY_MODE wins."""
    assert make_settings({"OTEL_TRACES_EXPORTER": "otlp"}).telemetry.mode == "otlp"
    both = make_settings({"OTEL_TRACES_EXPORTER": "otlp", "TIERROUTE_TELEMETRY_MODE": "off"})
    assert both.telemetry.mode == "off"


def test_unknown_mode_is_a_config_error() -> None:
    """A mode other than off, none, console or otlp fails at start-up."""
    with pytest.raises(ConfigError):
        settings_with(mode="zipkin")


def test_otlp_defaults_to_grpc_on_localhost() -> None:
    """With no OTEL_EXPORTER_OTLP_* set, spans go over gRPC to localhost:4317, insecure."""
    options = observability.OtlpOptions.from_environ({})
    assert (options.protocol, options.endpoint, options.insecure) == (
        "grpc",
        "http://localhost:4317",
        True,
    )


def test_otlp_http_appends_the_traces_path() -> None:
    """Over HTTP the general endpoint gets /v1/traces appended."""
    options = observability.OtlpOptions.from_environ(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
        }
    )
    assert (options.endpoint, options.insecure) == ("https://collector:4318/v1/traces", False)


def test_traces_specific_variables_win() -> None:
    """OTEL_EXPORTER_OTLP_TRACES_* override the general names, and its endpoint is kept as is."""
    options = observability.OtlpOptions.from_environ(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom",
        }
    )
    assert (options.protocol, options.endpoint) == ("http/protobuf", "http://traces:9999/custom")


def test_otlp_timeout_is_milliseconds_and_headers_are_parsed() -> None:
    """The timeout is read in milliseconds and headers as comma-separated key=value pairs."""
    options = observability.OtlpOptions.from_environ(
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y"}
    )
    assert options.timeout_s == 2.5
    assert dict(options.headers) == {"a": "1", "b": "x y"}
    assert "x y" not in repr(options)


@pytest.mark.parametrize("protocol", ["http/json", "thrift"])
def test_unsupported_otlp_protocol_is_a_config_error(protocol: str) -> None:
    """A protocol other than grpc or http/protobuf is refused with a readable error."""
    with pytest.raises(ConfigError, match="not supported"):
        observability.OtlpOptions.from_environ({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})


def test_parent_based_sampling_keeps_a_sampled_callers_trace() -> None:
    """At ratio 0 new traces are dropped, but a sampled caller's trace is still continued."""
    sampler = observability.build_sampler(settings_with(sample_ratio="0").telemetry, {})
    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
    parent = trace.SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    with tracer.start_as_current_span(
        "child", context=trace.set_span_in_context(trace.NonRecordingSpan(parent))
    ) as child:
        assert child.is_recording()


def test_otel_traces_sampler_overrides_the_ratio() -> None:
    """OTEL_TRACES_SAMPLER=always_off wins over a configured ratio of 1."""
    sampler = observability.build_sampler(
        settings_with(sample_ratio="1").telemetry, {"OTEL_TRACES_SAMPLER": "always_off"}
    )
    with TracerProvider(sampler=sampler).get_tracer("t").start_as_current_span("s") as span:
        assert not span.is_recording()


def test_resource_names_the_service() -> None:
    """OTEL_SERVICE_NAME names the service; OTEL_RESOURCE_ATTRIBUTES adds attributes."""
    environ = {"OTEL_SERVICE_NAME": "router-eu", "OTEL_RESOURCE_ATTRIBUTES": "env=prod,team=ml"}
    resource = observability.build_resource(make_settings(environ).telemetry, environ)
    assert resource.attributes["service.name"] == "router-eu"
    assert (resource.attributes["env"], resource.attributes["team"]) == ("prod", "ml")


# -- spans: the success path --------------------------------------------------------------------


async def test_cascade_spans_are_children_of_the_server_span() -> None:
    """Route, answer and judge spans share the server span's trace and have it as parent."""
    async with observed_server(passing()) as o:
        await o.running.stub.Cascade(cascade())
    server = o.one(CASCADE_RPC)
    assert server.kind is SpanKind.SERVER
    children = [s for s in o.spans() if s is not server]
    assert sorted(s.name for s in children) == [
        "tierroute.answer",
        "tierroute.judge",
        "tierroute.route",
    ]
    assert {s.context.trace_id for s in o.spans()} == {server.context.trace_id}
    assert all(s.parent is not None for s in children)
    assert {s.parent.span_id for s in children if s.parent} == {server.context.span_id}


async def test_answer_span_carries_genai_attributes_cost_and_outcome() -> None:
    """The answer span has the GenAI model and usage, its tier, role, attempt, cost, outcome."""
    async with observed_server(passing()) as o:
        await o.running.stub.Cascade(cascade())
    answer = attrs(o.one("tierroute.answer"))
    assert answer["gen_ai.system"] == "anthropic"
    assert answer["gen_ai.request.model"] == CHEAP
    assert (answer["gen_ai.usage.input_tokens"], answer["gen_ai.usage.output_tokens"]) == (
        1000,
        100,
    )
    assert answer["tierroute.cost_usd"] == pytest.approx(SETTINGS.tiers[0].cost_usd(1000, 100))
    assert (answer["tierroute.tier"], answer["tierroute.role"]) == ("cheap", "answer")
    assert (answer["tierroute.attempt"], answer["tierroute.outcome"]) == (1, "ok")
    assert o.one("tierroute.answer").status.status_code is StatusCode.UNSET


async def test_judge_span_carries_the_verdict() -> None:
    """The judge span names the judging tier, its role and its verdict."""
    async with observed_server(passing()) as o:
        await o.running.stub.Cascade(cascade())
    judge = attrs(o.one("tierroute.judge"))
    assert (judge["tierroute.tier"], judge["tierroute.role"]) == ("mid", "judge")
    assert (judge["tierroute.verdict"], judge["tierroute.judge.issue_count"]) == ("pass", 0)


async def test_unparseable_verdict_is_marked_on_the_judge_span() -> None:
    """A judge reply that does not validate is verdict unavailable with parse_failed set."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(ANSWER)], MID: [Reply.answer(BETTER)]},
        judges={MID: [Reply.raw_tool_input({"passes": "yes"})], TOP: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade())
    mid_judge = next(s for s in o.named("tierroute.judge") if attrs(s)["tierroute.tier"] == "mid")
    assert attrs(mid_judge)["tierroute.verdict"] == "unavailable"
    assert attrs(mid_judge)["tierroute.judge.parse_failed"] is True


async def test_request_span_sums_up_the_cascade() -> None:
    """The server span carries the request's final tier, judge status and total cost."""
    async with observed_server(passing()) as o:
        reply = await o.running.stub.Cascade(cascade(request_id="req-7"))
    server = attrs(o.one(CASCADE_RPC))
    assert server["tierroute.request_id"] == "req-7"
    assert (server["tierroute.tier"], server["tierroute.start_tier"]) == ("cheap", "cheap")
    assert server["tierroute.judge_status"] == "passed"
    assert server["tierroute.total_cost_usd"] == pytest.approx(reply.total_cost_usd)
    assert (server["tierroute.escalated"], server["tierroute.hops"]) == (False, 2)


async def test_route_rpc_has_one_route_span_with_the_decision() -> None:
    """Route makes one route span: strategy, tier, scores, thresholds, version, rule, reasons."""
    async with observed_server() as o:
        await o.running.stub.Route(pb.RouteRequest(query=QUESTION))
    route = o.one("tierroute.route")
    a = attrs(route)
    assert route.parent is not None
    assert route.parent.span_id == o.one(ROUTE_RPC).context.span_id
    assert (a["tierroute.strategy"], a["tierroute.tier"]) == ("classifier", "cheap")
    assert a["tierroute.route.score.cheap"] == pytest.approx(0.9)
    assert a["tierroute.route.threshold.max_risk_cheap"] == pytest.approx(0.3)
    assert (a["tierroute.route.model_version"], a["tierroute.route.rule"]) == (
        "static-test",
        "calibrated",
    )
    assert a["tierroute.route.reasons"] == ("RISK_WITHIN_THRESHOLD",)


async def test_cascade_makes_exactly_one_route_span() -> None:
    """A cascade's routing shows once, with the decision, although it goes through the router."""
    async with observed_server(passing()) as o:
        await o.running.stub.Cascade(cascade())
    route = attrs(o.one("tierroute.route"))
    assert (route["tierroute.strategy"], route["tierroute.tier"]) == ("heuristic", "cheap")
    assert route["tierroute.route.reasons"] == ("SIMPLE_QUERY",)


async def test_client_traceparent_continues_the_callers_trace() -> None:
    """A W3C traceparent in call metadata makes the server span a child of the client span."""
    client_exporter = InMemorySpanExporter()
    client_provider = TracerProvider()
    client_provider.add_span_processor(SimpleSpanProcessor(client_exporter))
    async with observed_server(passing()) as o:
        with client_provider.get_tracer("client").start_as_current_span(
            "client-call", kind=SpanKind.CLIENT
        ) as client_span:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            await o.running.stub.Cascade(cascade(), metadata=tuple(carrier.items()))
    client_provider.shutdown()
    server = o.one(CASCADE_RPC)
    assert "traceparent" in carrier
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.parent.span_id == client_span.get_span_context().span_id
    assert {s.context.trace_id for s in o.spans()} == {client_span.get_span_context().trace_id}


async def test_health_checks_are_not_traced() -> None:
    """Health probes make no spans, so they do not flood the trace store."""
    async with observed_server() as o:
        stub = health_pb2_grpc.HealthStub(o.running.channel)
        await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert o.spans() == []


# -- spans: escalation, speculation, errors, retries ------------------------------------------


async def test_escalation_is_an_event_on_the_request_span() -> None:
    """A failed verdict adds an escalation event (reason, from, to) to the server span."""
    async with observed_server(escalating()) as o:
        await o.running.stub.Cascade(cascade())
    (event,) = events(o.one(CASCADE_RPC), "tierroute.escalation")
    assert (
        event["tierroute.reason"],
        event["tierroute.from_tier"],
        event["tierroute.to_tier"],
    ) == (
        "JUDGE_FAILED",
        "cheap",
        "mid",
    )
    verdicts = [attrs(s)["tierroute.verdict"] for s in o.named("tierroute.judge")]
    assert verdicts == ["fail", "pass"]
    assert attrs(o.one(CASCADE_RPC))["tierroute.escalated"] is True


async def test_cancelled_speculative_call_ends_cancelled_with_an_event() -> None:
    """The mid call started in parallel ends cancelled, not an error, saying why."""
    held = asyncio.Event()
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(ANSWER)], MID: [Reply.answer(BETTER, gate=held)]},
        judges={MID: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade(speculation=pb.SPECULATION_MODE_ON))
    spec = next(s for s in o.named("tierroute.answer") if attrs(s)["tierroute.speculative"])
    a = attrs(spec)
    assert (a["tierroute.tier"], a["tierroute.outcome"]) == ("mid", "cancelled")
    # Billed the prompt it read, as its hop is; it returned no output.
    assert a["tierroute.cost_usd"] > 0
    assert "gen_ai.usage.output_tokens" not in a
    assert spec.status.status_code is StatusCode.UNSET
    assert events(spec, "tierroute.cancelled") == [
        {"tierroute.cancel_reason": "speculation_not_needed", "tierroute.speculative": True}
    ]
    assert spec.parent is not None
    assert spec.parent.span_id == o.one(CASCADE_RPC).context.span_id


async def test_provider_error_marks_the_call_span_error() -> None:
    """A failed provider call's span has status ERROR and error.type; the cascade escalates."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.fail(ProviderOverloaded("529"))], MID: [Reply.answer(BETTER)]},
        judges={TOP: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade())
    failed = next(s for s in o.named("tierroute.answer") if attrs(s)["tierroute.tier"] == "cheap")
    assert failed.status.status_code is StatusCode.ERROR
    assert (attrs(failed)["error.type"], attrs(failed)["tierroute.outcome"]) == (
        "overloaded",
        "error",
    )
    (event,) = events(o.one(CASCADE_RPC), "tierroute.escalation")
    assert event["tierroute.reason"] == "PROVIDER_ERROR"


async def test_all_tiers_failing_marks_the_server_span_error() -> None:
    """When no tier can answer, the RPC fails and its server span has status ERROR."""
    provider = ScriptedProvider(
        answers={TOP: [Reply.fail(ProviderOverloaded("529")) for _ in range(3)]}
    )
    async with observed_server(provider) as o:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await o.running.stub.Cascade(cascade(start_tier="expensive"))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert o.one(CASCADE_RPC).status.status_code is StatusCode.ERROR
    assert all(s.status.status_code is StatusCode.ERROR for s in o.named("tierroute.answer"))


async def test_retry_is_an_event_with_its_cause() -> None:
    """A rate-limited top-tier call is retried; the retry shows as an event with its cause."""
    provider = ScriptedProvider(
        answers={TOP: [Reply.fail(RateLimited("429", retry_after=0.0)), Reply.answer(BETTER)]}
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade(start_tier="expensive"))
    (retry,) = events(o.one(CASCADE_RPC), "tierroute.retry")
    assert (retry["tierroute.tier"], retry["tierroute.retry.cause"]) == (
        "expensive",
        "rate_limited",
    )
    assert (retry["tierroute.attempt"], retry["tierroute.retry.delay_s"]) == (2, 0.0)
    attempts = [attrs(s)["tierroute.attempt"] for s in o.named("tierroute.answer")]
    assert sorted(attempts) == [1, 2]


# -- content: off by default, opt-in records it ------------------------------------------------


def every_string(spans: Sequence[ReadableSpan]) -> str:
    values: list[str] = []
    for span in spans:
        values.extend(str(v) for v in (span.attributes or {}).values())
        for event in span.events:
            values.extend(str(v) for v in (event.attributes or {}).values())
    return "\n".join(values)


async def test_no_prompt_or_answer_text_by_default() -> None:
    """No attribute or event of any span holds the query, an answer or the judge's issues."""
    held = asyncio.Event()
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.answer(ANSWER)],
            MID: [Reply.answer(BETTER, gate=held)],
        },
        judges={MID: [Reply.verdict(False, ["names the river too"])], TOP: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        task = asyncio.ensure_future(
            o.running.stub.Cascade(cascade(speculation=pb.SPECULATION_MODE_ON))
        )
        await provider.wait_for_calls(3)
        held.set()
        await task
    text = every_string(o.spans())
    for secret in ("capital of France", "Paris", "Seine", "names the river"):
        assert secret not in text


async def test_capture_content_opt_in_records_genai_content_events() -> None:
    """With capture_content on, each completed call has a GenAI event with its messages."""
    async with observed_server(
        passing(), environ={"TIERROUTE_TELEMETRY_CAPTURE_CONTENT": "true"}
    ) as o:
        await o.running.stub.Cascade(cascade())
    (answer,) = events(o.one("tierroute.answer"), "gen_ai.client.inference.operation.details")
    sent = json.loads(answer["gen_ai.input.messages"])
    assert sent[-1]["parts"][0]["content"] == QUESTION
    assert json.loads(answer["gen_ai.output.messages"])[0]["parts"][0]["content"] == ANSWER
    (judge,) = events(o.one("tierroute.judge"), "gen_ai.client.inference.operation.details")
    assert "gen_ai.system_instructions" in judge
    assert json.loads(judge["gen_ai.output.messages"])[0]["parts"][0]["name"] == "record_verdict"


# -- the replay backend: the real SDK over HTTP -------------------------------------------------


def replay_record(path: Path) -> Path:
    record = make_record(0, random.Random(0))
    record["id"] = "toy_facts/telemetry"
    record["prompt"] = QUESTION
    for model_key in TRIO.values():
        record["models"][model_key]["pred"] = "A"
        record["models"][model_key]["response"] = f"Reasoning by {model_key}. The answer is (A)."
    return write_dataset(path, [record])


async def test_speculative_http_call_cancelled_over_replay(tmp_path: Path) -> None:
    """Through the real SDK and replay server, the held mid call's span ends cancelled."""
    data = replay_record(tmp_path / "replay.jsonl.gz")
    settings = make_settings({"TIERROUTE_REPLAY_DATA": str(data), "TIERROUTE_REPLAY_PORT": "0"})
    replay = ReplayServer(ReplayStore.load(data), settings.tiers, settings.replay)
    replay.start()
    judge_gate = asyncio.Event()
    provider = RecordingProvider(
        build_provider(settings, base_url=replay.base_url),
        extra_headers={(MID, "answer"): {FAULT_HEADER: "timeout"}},
        gates={(MID, "judge"): judge_gate},
    )
    try:
        async with observed_server(provider, environ={"TIERROUTE_REPLAY_TIME_SCALE": "0"}) as o:
            call = asyncio.ensure_future(
                o.running.stub.Cascade(cascade(speculation=pb.SPECULATION_MODE_ON))
            )
            # The cheap answer and the held mid answer have both reached the replay server.
            assert await asyncio.to_thread(replay.wait_for, lambda s: s.requests >= 2, 30.0)
            judge_gate.set()
            reply = await call
    finally:
        await provider.aclose()
        await asyncio.to_thread(replay.stop)
    assert reply.judge_status == pb.JUDGE_STATUS_PASSED
    spec = next(s for s in o.named("tierroute.answer") if attrs(s)["tierroute.speculative"])
    assert attrs(spec)["tierroute.outcome"] == "cancelled"
    assert events(spec, "tierroute.cancelled")[0]["tierroute.cancel_reason"] == (
        "speculation_not_needed"
    )
    cheap = next(s for s in o.named("tierroute.answer") if not attrs(s)["tierroute.speculative"])
    assert attrs(cheap)["gen_ai.usage.input_tokens"] > 0


# -- metrics -----------------------------------------------------------------------------------


async def test_metrics_count_requests_escalations_verdicts_and_cost() -> None:
    """An escalating cascade counts its request, escalation, both verdicts and cost per tier."""
    async with observed_server(escalating()) as o:
        await o.running.stub.Cascade(cascade())
        requests = o.points(m.REQUESTS)
        escalations = o.points(m.ESCALATIONS)
        verdicts = o.points(m.JUDGE_VERDICTS)
        cost = o.points(m.COST)
    assert requests == [
        ({"rpc": "cascade", "tier": "mid", "strategy": "heuristic", "outcome": "ok"}, 1)
    ]
    assert escalations == [({"reason": "JUDGE_FAILED", "from_tier": "cheap"}, 1)]
    assert sorted((a["tier"], a["verdict"]) for a, _ in verdicts) == [
        ("expensive", "pass"),
        ("mid", "fail"),
    ]
    assert {(a["tier"], a["role"]) for a, _ in cost} == {
        ("cheap", "answer"),
        ("mid", "judge"),
        ("mid", "answer"),
        ("expensive", "judge"),
    }
    assert all(value > 0 for _, value in cost)


async def test_metrics_count_provider_errors_by_kind() -> None:
    """A failed call is counted under its tier, role and error kind."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.fail(ProviderOverloaded("529"))], MID: [Reply.answer(BETTER)]},
        judges={TOP: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade())
        errors = o.points(m.PROVIDER_ERRORS)
    assert errors == [({"tier": "cheap", "role": "answer", "kind": "overloaded"}, 1)]


async def test_metrics_count_judge_parse_failures() -> None:
    """A judge reply without a valid verdict is counted as a parse failure of its tier."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer(ANSWER)], MID: [Reply.answer(BETTER)]},
        judges={MID: [Reply.raw_tool_input(None)], TOP: [Reply.verdict(True)]},
    )
    async with observed_server(provider) as o:
        await o.running.stub.Cascade(cascade())
        failures = o.points(m.JUDGE_PARSE_FAILURES)
    assert failures == [({"tier": "mid"}, 1)]


async def test_route_records_decision_latency_and_requests() -> None:
    """Each Route call adds to the decision-latency histogram and the requests counter."""
    async with observed_server() as o:
        for _ in range(3):
            await o.running.stub.Route(pb.RouteRequest(query=QUESTION))
        (decision,) = o.points(m.DECISION_DURATION)
        requests = o.points(m.REQUESTS)
    attributes, histogram = decision
    assert attributes == {"rpc": "route", "strategy": "classifier", "tier": "cheap"}
    assert histogram.count == 3
    assert requests == [
        ({"rpc": "route", "tier": "cheap", "strategy": "classifier", "outcome": "ok"}, 3)
    ]


def breaker_points(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str(dict(p.attributes or {})["tier"]): int(p.value)  # type: ignore[union-attr]
        for r in data.resource_metrics
        for s in r.scope_metrics
        for metric in s.metrics
        if metric.name == m.BREAKER_STATE
        for p in metric.data.data_points
    }


def test_breaker_state_is_observable_per_tier() -> None:
    """set_breaker_state publishes 0 closed, 1 half-open, 2 open per tier."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = m.Metrics(provider)
    recorder.set_breaker_state("cheap", "open")
    recorder.set_breaker_state("mid", "half_open")
    recorder.set_breaker_state("expensive", "closed")
    assert breaker_points(reader) == {"cheap": 2, "mid": 1, "expensive": 0}
    assert recorder.breaker_state("cheap") == "open"
    provider.shutdown()


def test_unknown_breaker_state_is_rejected() -> None:
    """A state outside closed, half_open and open is a ValueError, not a silent gauge."""
    with pytest.raises(ValueError, match="breaker state"):
        m.Metrics().set_breaker_state("cheap", "broken")  # type: ignore[arg-type]


@pytest.fixture
def prometheus() -> Iterator[tuple[m.PrometheusEndpoint, m.Metrics]]:
    """A Prometheus endpoint on a free port with a Metrics recorder feeding it."""
    endpoint = m.start_prometheus("127.0.0.1", 0)
    provider = MeterProvider(metric_readers=[endpoint.reader])
    try:
        yield endpoint, m.Metrics(provider)
    finally:
        provider.shutdown()
        endpoint.close()


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_prometheus_endpoint_serves_the_metric_names(
    prometheus: tuple[m.PrometheusEndpoint, m.Metrics],
) -> None:
    """The scrape endpoint serves every instrument under its Prometheus name."""
    endpoint, recorder = prometheus
    recorder.request(rpc="cascade", tier="cheap", strategy="classifier", outcome="ok")
    recorder.escalation(reason="JUDGE_FAILED", from_tier="cheap")
    recorder.judge_verdict(tier="mid", verdict="pass")
    recorder.judge_parse_failure(tier="mid")
    recorder.cost(tier="cheap", role="answer", usd=0.002)
    recorder.decision(rpc="route", strategy="classifier", tier="cheap", seconds=0.0001)
    recorder.provider_error(tier="cheap", role="answer", kind="overloaded")
    recorder.set_breaker_state("cheap", "open")
    body = scrape(endpoint.port)
    for name in (
        "tierroute_requests_total{",
        "tierroute_escalations_total{",
        "tierroute_judge_verdicts_total{",
        "tierroute_judge_parse_failures_total{",
        "tierroute_cost_usd_total{",
        "tierroute_routing_decision_duration_seconds_bucket{",
        "tierroute_provider_errors_total{",
        "tierroute_circuit_breaker_state{",
    ):
        assert name in body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_setup_starts_prometheus_on_the_configured_port() -> None:
    """A non-zero prometheus_port makes setup serve metrics there, closed by shutdown."""
    port = free_port()
    tel = observability.setup(settings_with(prometheus_port=str(port)), {})
    try:
        assert tel.prometheus is not None
        assert tel.meter_provider is not None
        m.Metrics(tel.meter_provider).request(
            rpc="route", tier="cheap", strategy="heuristic", outcome="ok"
        )
        body = scrape(port)
    finally:
        tel.shutdown()
    assert 'service_name="tierroute"' in body
    assert "tierroute_requests_total" in body
