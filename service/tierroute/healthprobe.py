"""A tiny gRPC health probe for container health checks: `python -m tierroute.healthprobe`.

It asks the standard `grpc.health.v1.Health/Check` and exits 0 when the answer is SERVING,
1 otherwise (NOT_SERVING, an unknown service, no answer in time, or no connection), so a
Docker HEALTHCHECK or a Kubernetes exec probe needs no downloaded `grpc_health_probe`
binary. It imports only grpc and the health stubs, so it starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
UNREACHABLE = "UNREACHABLE"


def check(
    address: str,
    service: str = "",
    *,
    timeout_s: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The serving status name of `service` at `address` (`SERVING`, `NOT_SERVING`, ...).

    `SERVICE_UNKNOWN` when the server does not know the service, `UNREACHABLE` when no
    answer came within `timeout_s`, else the status code's name when the call failed.
    """
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return UNREACHABLE
            return str(code.name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tierroute.healthprobe", description=__doc__)
    parser.add_argument("--addr", default=DEFAULT_ADDRESS, help="host:port of the server")
    parser.add_argument(
        "--service", default="", help="service name to check (default: the whole server)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca", type=Path, help="PEM CA bundle for --tls (default: system roots)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; 0 when SERVING, 1 otherwise. Prints the status on one line."""
    args = _parser().parse_args(argv)
    credentials = None
    if args.tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.ca.read_bytes() if args.ca else None
        )
    elif args.ca:
        print("--ca needs --tls", file=sys.stderr)
        return 2
    status = check(args.addr, args.service, timeout_s=args.timeout, credentials=credentials)
    print(f"{args.addr} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
