"""Channel set-up shared by the sync and asyncio clients: target, service config, credentials.

Balancing and retries are gRPC's own, configured through the service config rather than
loops in this package: `round_robin` spreads calls over every address the target resolves
to (each call, not each connection), and a `retryPolicy` retries `Route` (idempotent: it
calls no model) on UNAVAILABLE and RESOURCE_EXHAUSTED. Every attempt shares the call's one
deadline. `Cascade` is not retried unless asked, because a retry pays for model calls again.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

SERVICE = "tierroute.v1.TierRouter"

ChannelOption = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A gRPC `retryPolicy`; gRPC caps `max_attempts` at 5 whatever is asked."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    def __post_init__(self) -> None:
        if self.max_attempts < 2:
            raise ValueError("max_attempts counts the first try, so it must be at least 2")
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0:
            raise ValueError("backoff durations must be positive")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be positive")
        unknown = [c for c in self.retryable_status_codes if c not in grpc.StatusCode.__members__]
        if unknown or not self.retryable_status_codes:
            raise ValueError(f"retryable_status_codes must name gRPC codes; got {unknown}")

    def as_json(self) -> dict[str, Any]:
        """The policy in the service config's JSON form."""
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff_s),
            "maxBackoff": _duration(self.max_backoff_s),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }


def _duration(seconds: float) -> str:
    # The service config takes protobuf JSON durations: decimal seconds with an "s".
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def service_config(
    retry: RetryPolicy | None, *, retry_cascade: bool = False, load_balancing: str = "round_robin"
) -> dict[str, Any]:
    """The service config: a balancing policy, and retries for Route (and Cascade if asked)."""
    config: dict[str, Any] = {
        "loadBalancingConfig": [{load_balancing: {}}],
        # Client-side health checking: a replica that reports NOT_SERVING (draining on
        # shutdown) gets no new calls, so a graceful stop loses none.
        "healthCheckConfig": {"serviceName": SERVICE},
    }
    if retry is not None:
        methods = [{"service": SERVICE, "method": "Route"}]
        if retry_cascade:
            methods.append({"service": SERVICE, "method": "Cascade"})
        config["methodConfig"] = [{"name": methods, "retryPolicy": retry.as_json()}]
        # Stops retries from multiplying load once most calls are failing.
        config["retryThrottling"] = {"maxTokens": 10, "tokenRatio": 0.1}
    return config


def _ip_literal(address: str) -> int | None:
    """The IP version of a `host:port` whose host is an IP literal, else None."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def resolve_target(target: str | Sequence[str]) -> str:
    """One gRPC target string for an address or a list of `ip:port` addresses.

    A string passes through unchanged (`127.0.0.1:50051`, `dns:///name:50051`,
    `ipv4:10.0.0.1:50051,10.0.0.2:50051`). A list of IP literals becomes an `ipv4:` or
    `ipv6:` target listing them all. Host names cannot be listed: gRPC's static schemes take
    literals only, so use one DNS name that resolves to every replica instead.
    """
    if isinstance(target, str):
        if not target:
            raise ValueError("target must not be empty")
        return target
    addresses = list(target)
    if not addresses:
        raise ValueError("target must name at least one address")
    if len(addresses) == 1:
        return addresses[0]
    versions = {_ip_literal(a) for a in addresses}
    if versions == {4}:
        return "ipv4:" + ",".join(addresses)
    if versions == {6}:
        return "ipv6:" + ",".join(addresses)
    raise ValueError(
        "a list of targets must be 'ip:port' literals of one IP version; for host names use "
        "one DNS name that resolves to every replica, e.g. dns:///tierroute-headless:50051"
    )


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Everything needed to open a channel and authenticate calls on it."""

    target: str
    credentials: grpc.ChannelCredentials | None
    options: tuple[ChannelOption, ...]
    call_metadata: tuple[tuple[str, str], ...]


def channel_spec(
    target: str | Sequence[str],
    *,
    tls: bool,
    root_certificates: bytes | None,
    client_certificate: tuple[bytes, bytes] | None,
    token: str | None,
    allow_insecure_token: bool,
    retry: RetryPolicy | None,
    retry_cascade: bool,
    options: Sequence[ChannelOption],
) -> ChannelSpec:
    """Resolve the target, build the service config, and choose how the token travels."""
    if client_certificate is not None and not tls:
        raise ValueError("client_certificate needs tls=True")
    if root_certificates is not None and not tls:
        raise ValueError("root_certificates needs tls=True")
    config = service_config(retry, retry_cascade=retry_cascade)
    merged: dict[str, Any] = {
        "grpc.service_config": json.dumps(config),
        "grpc.enable_retries": 1,
        # The retry policy is this client's decision; ignore service configs published in DNS.
        "grpc.service_config_disable_resolution": 1,
    }
    # The caller's options replace these by name: with a key given twice, gRPC keeps the first.
    merged.update(options)
    credentials: grpc.ChannelCredentials | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    if tls:
        chain, key = client_certificate or (None, None)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_certificates, private_key=key, certificate_chain=chain
        )
        if token:
            # Call credentials: gRPC itself refuses to send them over an insecure transport.
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
    elif token:
        if not allow_insecure_token:
            raise ValueError(
                "a bearer token over plain text can be read by anyone on the path; use "
                "tls=True, or allow_insecure_token=True inside a trusted network only"
            )
        metadata = (("authorization", f"Bearer {token}"),)
    return ChannelSpec(resolve_target(target), credentials, tuple(merged.items()), metadata)
