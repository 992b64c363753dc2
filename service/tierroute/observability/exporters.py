"""OTLP span exporters, gRPC or HTTP/protobuf, configured like the SDK's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.util.re import parse_env_headers

from tierroute.errors import ConfigError

PROTOCOL_GRPC = "grpc"


PROTOCOL_HTTP = "http/protobuf"


_DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"


_DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"


_TRACES_PATH = "/v1/traces"


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
