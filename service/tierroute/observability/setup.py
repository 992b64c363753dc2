"""OpenTelemetry for tierroute: provider setup from settings and `OTEL_*` variables, span names.

`setup(settings, environ)` builds the tracer and meter providers `tierroute serve` injects into
the server; nothing here reads `os.environ` or installs a global provider. Trace export modes
are off, console and otlp (OTLP over gRPC or HTTP/protobuf, chosen by
`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`). Sampling is
parent-based with a ratio for new traces, unless `OTEL_TRACES_SAMPLER` names another sampler.
Metrics are scraped from a Prometheus endpoint (`tierroute.observability.metrics`).

The span and attribute names every module uses live here too, with `annotate_route`, which
describes a routing decision on a span. No span attribute carries prompt or answer text;
content capture is a separate opt-in (`telemetry.capture_content`, docs/observability.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote

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

from tierroute import __version__
from tierroute.errors import ConfigError
from tierroute.observability.exporters import (
    OtlpOptions,
    otlp_exporter,
)
from tierroute.observability.metrics import PrometheusEndpoint, start_prometheus
from tierroute.observability.names import (
    INSTRUMENTATION_NAME,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

    from tierroute.settings import Settings, TelemetryConfig

logger = logging.getLogger(__name__)


def get_tracer(provider: trace.TracerProvider | None) -> trace.Tracer | None:
    """tierroute's tracer from `provider`, or None (no tracing) when there is none."""
    if provider is None:
        return None
    return provider.get_tracer(INSTRUMENTATION_NAME, __version__)


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
