"""Observability: traces (the OpenTelemetry setup, OTLP exporters, span and attribute names)
and metrics (OpenTelemetry instruments, read by Prometheus).

Nothing here knows about routing or the cascade: the wings above write their own spans with
the names from `names`. No prompt or answer text is recorded unless content capture is on.
"""

from tierroute.observability.exporters import (
    PROTOCOL_GRPC,
    PROTOCOL_HTTP,
    OtlpOptions,
    otlp_exporter,
)
from tierroute.observability.metrics import (
    BreakerState,
    Metrics,
    PrometheusEndpoint,
    start_prometheus,
)
from tierroute.observability.setup import (
    Telemetry,
    build_resource,
    build_sampler,
    get_tracer,
    setup,
    trace_exporter_names,
)

__all__ = [
    "PROTOCOL_GRPC",
    "PROTOCOL_HTTP",
    "BreakerState",
    "Metrics",
    "OtlpOptions",
    "PrometheusEndpoint",
    "Telemetry",
    "build_resource",
    "build_sampler",
    "get_tracer",
    "otlp_exporter",
    "setup",
    "start_prometheus",
    "trace_exporter_names",
]
