"""OpenTelemetry for tierroute: provider setup from settings and `OTEL_*` variables, span names.

`setup(settings, environ)` builds the tracer and meter providers `tierroute serve` injects into
the server; nothing here reads `os.environ` or installs a global provider. Trace export modes
are off, console and otlp (OTLP over gRPC or HTTP/protobuf, chosen by
`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`). Sampling is
parent-based with a ratio for new traces, unless `OTEL_TRACES_SAMPLER` names another sampler.
Metrics are scraped from a Prometheus endpoint (`tierroute.metrics`).

The span and attribute names every module uses live here too, with `annotate_route`, which
describes a routing decision on a span. No span attribute carries prompt or answer text;
content capture is a separate opt-in (`telemetry.capture_content`, docs/observability.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.util.re import parse_env_headers

from tierroute import __version__
from tierroute.errors import ConfigError
from tierroute.metrics import PrometheusEndpoint, start_prometheus

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

    from tierroute.router import Decision
    from tierroute.settings import Settings, TelemetryConfig

logger = logging.getLogger(__name__)

# The instrumentation scope of every tierroute span and instrument.
INSTRUMENTATION_NAME = "tierroute"

# Span names: one per hop of a request (the RPC span itself comes from the gRPC instrumentation).
SPAN_ROUTE = "tierroute.route"
SPAN_ANSWER = "tierroute.answer"
SPAN_JUDGE = "tierroute.judge"

# Attributes of tierroute's own spans (GenAI ones use the semantic-convention constants).
ATTR_TIER = "tierroute.tier"
ATTR_TIER_INDEX = "tierroute.tier_index"
ATTR_ROLE = "tierroute.role"
ATTR_ATTEMPT = "tierroute.attempt"
ATTR_SPECULATIVE = "tierroute.speculative"
ATTR_OUTCOME = "tierroute.outcome"
ATTR_ERROR_KIND = "tierroute.error_kind"
ATTR_VERDICT = "tierroute.verdict"
ATTR_JUDGE_ISSUES = "tierroute.judge.issue_count"
ATTR_JUDGE_PARSE_FAILED = "tierroute.judge.parse_failed"
ATTR_COST_USD = "tierroute.cost_usd"
ATTR_STRATEGY = "tierroute.strategy"
ATTR_CONFIDENCE = "tierroute.confidence"
ATTR_RULE = "tierroute.route.rule"
ATTR_MODEL_VERSION = "tierroute.route.model_version"
ATTR_REASONS = "tierroute.route.reasons"
ATTR_SCORE_PREFIX = "tierroute.route.score."
ATTR_THRESHOLD_PREFIX = "tierroute.route.threshold."
ATTR_DECISION_TIME_US = "tierroute.route.decision_time_us"
ATTR_ESTIMATED_COST_USD = "tierroute.route.estimated_cost_usd"
ATTR_QUERY_TYPE = "tierroute.route.query_type"
ATTR_ESTIMATED_TOKENS = "tierroute.route.estimated_tokens"
# The value policy's plan for a Cascade: its action, and what it expected of that action.
ATTR_PLAN = "tierroute.route.plan"
ATTR_PLAN_P_CORRECT = "tierroute.route.plan.p_correct"
ATTR_PLAN_COST_USD = "tierroute.route.plan.cost_usd"
# On the request (RPC) span, set when a cascade ends.
ATTR_REQUEST_ID = "tierroute.request_id"
ATTR_START_TIER = "tierroute.start_tier"
ATTR_JUDGE_STATUS = "tierroute.judge_status"
ATTR_ESCALATED = "tierroute.escalated"
ATTR_DEGRADED = "tierroute.degraded"
ATTR_DEGRADED_REASONS = "tierroute.degraded_reasons"
ATTR_TOTAL_COST_USD = "tierroute.total_cost_usd"
ATTR_HOPS = "tierroute.hops"
# Event attributes.
ATTR_REASON = "tierroute.reason"
ATTR_DETAIL = "tierroute.detail"
ATTR_FROM_TIER = "tierroute.from_tier"
ATTR_TO_TIER = "tierroute.to_tier"
ATTR_RETRY_CAUSE = "tierroute.retry.cause"
ATTR_RETRY_DELAY_S = "tierroute.retry.delay_s"
ATTR_CANCEL_REASON = "tierroute.cancel_reason"

# Events: escalations and retries on the request span, cancellation on the cancelled call's.
EVENT_ESCALATION = "tierroute.escalation"
EVENT_RETRY = "tierroute.retry"
EVENT_RETRY_ABANDONED = "tierroute.retry_abandoned"
EVENT_CANCELLED = "tierroute.cancelled"
# The GenAI semantic conventions' event for captured content (opt-in only).
EVENT_CONTENT = "gen_ai.client.inference.operation.details"

# Why a call was cancelled, carried as the CancelledError's message.
CANCEL_NOT_NEEDED = "speculation_not_needed"
CANCEL_REQUEST_ENDED = "request_ended"
CANCEL_CALLER = "caller_cancelled"

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP = "http/protobuf"
_DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
_DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
_TRACES_PATH = "/v1/traces"


def annotate_route(span: trace.Span, decision: Decision, tier_names: Sequence[str]) -> None:
    """Describe a routing decision on `span`: tier, strategy, scores, thresholds, reasons,
    and the value policy's plan when a Cascade has one.

    Scores are keyed by tier name (`tier_names`, cheapest first); reason codes, never their
    details, are recorded.
    """
    if not span.is_recording():
        return
    span.set_attribute(ATTR_TIER, decision.tier.name)
    span.set_attribute(ATTR_TIER_INDEX, decision.tier_index)
    span.set_attribute(ATTR_STRATEGY, decision.strategy)
    span.set_attribute(ATTR_CONFIDENCE, decision.confidence)
    span.set_attribute(ATTR_RULE, decision.rule)
    span.set_attribute(ATTR_MODEL_VERSION, decision.model_version)
    span.set_attribute(ATTR_REASONS, [note.code.value for note in decision.reasons])
    span.set_attribute(ATTR_DECISION_TIME_US, decision.decision_time_us)
    span.set_attribute(ATTR_ESTIMATED_COST_USD, decision.estimated_cost_usd)
    span.set_attribute(ATTR_QUERY_TYPE, decision.features.query_type)
    span.set_attribute(ATTR_ESTIMATED_TOKENS, decision.features.estimated_tokens)
    for name, score in zip(tier_names, decision.scores, strict=False):
        span.set_attribute(f"{ATTR_SCORE_PREFIX}{name}", score)
    for name, value in decision.thresholds.items():
        span.set_attribute(f"{ATTR_THRESHOLD_PREFIX}{name}", value)
    plan = decision.plan
    if plan is not None:
        span.set_attribute(ATTR_PLAN, plan.action.name(tier_names))
        span.set_attribute(ATTR_PLAN_P_CORRECT, plan.p_correct[plan.index])
        span.set_attribute(ATTR_PLAN_COST_USD, plan.cost_usd[plan.index])


def get_tracer(provider: trace.TracerProvider | None) -> trace.Tracer | None:
    """tierroute's tracer from `provider`, or None (no tracing) when there is none."""
    if provider is None:
        return None
    return provider.get_tracer(INSTRUMENTATION_NAME, __version__)


@dataclass(frozen=True)
class OtlpOptions:
    """How spans are sent over OTLP, read from the standard `OTEL_EXPORTER_OTLP_*` names.

    The traces-specific name of each setting wins over the general one. Timeouts are in
    milliseconds, as the specification says (the Python SDK's own reading is seconds).
    """

    protocol: str = PROTOCOL_GRPC
    endpoint: str = _DEFAULT_GRPC_ENDPOINT
    insecure: bool = True
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 10.0
    compression: str = "none"
    certificate: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> OtlpOptions:
        """Read the OTLP trace exporter options; ConfigError names a value that cannot work."""

        def get(name: str) -> str:
            return (
                environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
                or environ.get(f"OTEL_EXPORTER_OTLP_{name}")
                or ""
            ).strip()

        # The Python SDK's default; Jaeger and the Collector accept both.
        protocol = get("PROTOCOL") or PROTOCOL_GRPC
        if protocol not in (PROTOCOL_GRPC, PROTOCOL_HTTP):
            raise ConfigError(
                f"OTLP protocol {protocol!r} is not supported; use {PROTOCOL_GRPC!r} "
                f"or {PROTOCOL_HTTP!r}"
            )
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if protocol == PROTOCOL_GRPC:
            endpoint = traces_endpoint or base or _DEFAULT_GRPC_ENDPOINT
        elif traces_endpoint:
            # The signal-specific URL is used as given; the general one gets the signal path.
            endpoint = traces_endpoint
        else:
            endpoint = (base or _DEFAULT_HTTP_ENDPOINT).rstrip("/") + _TRACES_PATH
        scheme = urlparse(endpoint).scheme
        if scheme not in ("http", "https", ""):
            raise ConfigError(f"OTLP endpoint {endpoint!r} must be an http or https URL")
        insecure_flag = get("INSECURE").lower()
        insecure = scheme == "http" or (scheme == "" and insecure_flag == "true")
        compression = get("COMPRESSION").lower() or "none"
        if compression not in ("none", "gzip"):
            raise ConfigError(f"OTLP compression {compression!r} is not supported; use gzip")
        timeout_ms = get("TIMEOUT") or "10000"
        try:
            timeout_s = float(timeout_ms) / 1000.0
        except ValueError as exc:
            raise ConfigError(f"OTLP timeout {timeout_ms!r} is not a number of ms") from exc
        headers = dict(parse_env_headers(get("HEADERS"), liberal=True)) if get("HEADERS") else {}
        certificate = get("CERTIFICATE")
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            insecure=insecure,
            headers=headers,
            timeout_s=timeout_s,
            compression=compression,
            certificate=Path(certificate) if certificate else None,
        )


def otlp_exporter(options: OtlpOptions) -> SpanExporter:
    """An OTLP span exporter for `options`, every setting passed explicitly."""
    if options.protocol == PROTOCOL_HTTP:
        from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(
            endpoint=options.endpoint,
            certificate_file=str(options.certificate) if options.certificate else None,
            headers=dict(options.headers),
            timeout=options.timeout_s,
            compression=(
                HttpCompression.Gzip
                if options.compression == "gzip"
                else HttpCompression.NoCompression
            ),
        )
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    credentials = None
    if not options.insecure:
        root = options.certificate.read_bytes() if options.certificate else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return GrpcSpanExporter(
        endpoint=options.endpoint,
        insecure=options.insecure,
        credentials=credentials,
        headers=dict(options.headers),
        timeout=options.timeout_s,
        compression=(
            grpc.Compression.Gzip
            if options.compression == "gzip"
            else grpc.Compression.NoCompression
        ),
    )


_RATIO_SAMPLERS = {"traceidratio", "parentbased_traceidratio"}
_FIXED_SAMPLERS: dict[str, samplers.Sampler] = {
    "always_on": samplers.ALWAYS_ON,
    "always_off": samplers.ALWAYS_OFF,
    "parentbased_always_on": samplers.ParentBased(samplers.ALWAYS_ON),
    "parentbased_always_off": samplers.ParentBased(samplers.ALWAYS_OFF),
}


def build_sampler(config: TelemetryConfig, environ: Mapping[str, str]) -> samplers.Sampler:
    """Parent-based with `config.sample_ratio` for new traces, unless OTEL_TRACES_SAMPLER says."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    ratio = config.sample_ratio
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name and name not in _RATIO_SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER {name!r} is not supported; use one of "
            f"{sorted({*_FIXED_SAMPLERS, *_RATIO_SAMPLERS})}"
        )
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if name and arg:
        try:
            ratio = float(arg)
        except ValueError as exc:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG {arg!r} is not a number") from exc
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG must be within [0, 1]")
    if name == "traceidratio":
        return samplers.TraceIdRatioBased(ratio)
    return samplers.ParentBased(samplers.TraceIdRatioBased(ratio))


def build_resource(config: TelemetryConfig, environ: Mapping[str, str]) -> Resource:
    """The service's resource: its name and version plus `OTEL_RESOURCE_ATTRIBUTES`."""
    attributes: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    attributes.update(
        {
            TELEMETRY_SDK_LANGUAGE: "python",
            TELEMETRY_SDK_NAME: "opentelemetry",
            TELEMETRY_SDK_VERSION: sdk_version,
            SERVICE_NAME: config.service_name,
            SERVICE_VERSION: __version__,
        }
    )
    return Resource(attributes)


def trace_exporter_names(mode: str) -> list[str]:
    """The exporters a mode names: [], ["console"], ["otlp"] or both."""
    names = [m.strip() for m in mode.split(",") if m.strip() not in ("", "off", "none")]
    unknown = set(names) - {"console", "otlp"}
    if unknown:
        raise ConfigError(f"unknown telemetry mode(s) {sorted(unknown)}")
    return names


@dataclass
class Telemetry:
    """The providers `setup` built, and the one way to flush and close them."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    prometheus: PrometheusEndpoint | None = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span and metric now; False when the timeout passed first."""
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(timeout_millis) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop exporters, then close the Prometheus endpoint."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.prometheus is not None:
            self.prometheus.close()


def setup(
    settings: Settings, environ: Mapping[str, str], *, console_out: IO[str] | None = None
) -> Telemetry:
    """Build the tracer and meter providers from `settings.telemetry` and `OTEL_*` names.

    Tracing is off (no provider, so no per-call overhead) when the mode is off or
    `OTEL_SDK_DISABLED` is true; the Prometheus endpoint runs when its port is not 0.
    Nothing is installed globally: the caller injects the providers.
    """
    config = settings.telemetry
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        logger.info("telemetry disabled by OTEL_SDK_DISABLED")
        return Telemetry()
    names = trace_exporter_names(config.mode)
    resource = build_resource(config, environ)
    telemetry = Telemetry()
    if names:
        exporters: list[SpanExporter] = []
        if "otlp" in names:
            options = OtlpOptions.from_environ(environ)
            exporters.append(otlp_exporter(options))
            logger.info("tracing: OTLP over %s to %s", options.protocol, options.endpoint)
        if "console" in names:
            exporters.append(ConsoleSpanExporter(out=console_out or sys.stdout))
            logger.info("tracing: console")
        provider = TracerProvider(
            sampler=build_sampler(config, environ), resource=resource, shutdown_on_exit=False
        )
        for exporter in exporters:
            provider.add_span_processor(_batch_processor(exporter, environ))
        telemetry.tracer_provider = provider
    if config.prometheus_port:
        from opentelemetry.sdk.metrics import MeterProvider

        telemetry.prometheus = start_prometheus(config.prometheus_host, config.prometheus_port)
        telemetry.meter_provider = MeterProvider(
            metric_readers=[telemetry.prometheus.reader],
            resource=resource,
            shutdown_on_exit=False,
        )
        logger.info(
            "metrics: Prometheus on %s:%s", config.prometheus_host, telemetry.prometheus.port
        )
    return telemetry


def _batch_processor(exporter: SpanExporter, environ: Mapping[str, str]) -> BatchSpanProcessor:
    # Passed explicitly so the processor reads the injected mapping, not the process's.
    def number(name: str, default: int) -> int:
        raw = environ.get(name, "").strip()
        try:
            return int(raw) if raw else default
        except ValueError as exc:
            raise ConfigError(f"{name} {raw!r} is not a whole number") from exc

    return BatchSpanProcessor(
        exporter,
        max_queue_size=number("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        schedule_delay_millis=number("OTEL_BSP_SCHEDULE_DELAY", 5000),
        max_export_batch_size=number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        export_timeout_millis=number("OTEL_BSP_EXPORT_TIMEOUT", 30000),
    )
