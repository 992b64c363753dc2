"""The server-side commands: `serve` (the gRPC server), `replay-server` (the replay backend on
its own, until SIGINT or SIGTERM) and `hash-token` (a bearer token's digest for the tokens file).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from tierroute.api.security import hash_token
from tierroute.api.server import serve
from tierroute.errors import ConfigError
from tierroute.providers.replay.http_server import ReplayServer
from tierroute.settings import Settings


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve`."""
    parser = subparsers.add_parser(
        "serve",
        description=(
            "Run the gRPC server and the Messages API endpoint: load the model, warm up, "
            "serve until SIGTERM or SIGINT."
        ),
    )
    parser.add_argument("--host", default=None, help="bind address (default from config)")
    parser.add_argument("--port", type=int, default=None, help="port (default from config)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes sharing the port (default: server.workers, 0 = one per core)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="port of the Anthropic Messages API endpoint; 0 picks a free one (default from "
        "config, http.port, where 0 turns the endpoint off)",
    )
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Serve until a signal stops the server (or its workers)."""
    from tierroute.api.workers import default_workers, run_group

    n = default_workers(settings) if args.workers is None else args.workers
    if n < 1:
        raise ConfigError("--workers must be at least 1")
    if n > 1:
        return run_group(settings, n, args.host, args.port, environ, http_port=args.http_port)
    asyncio.run(serve(settings, args.host, args.port, environ=environ, http_port=args.http_port))
    return 0


def add_replay_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `replay-server` subcommand; its options override the settings."""
    parser = subparsers.add_parser(
        "replay-server",
        description=(
            "A local Anthropic Messages API that answers from recorded model outputs. "
            "Point ANTHROPIC_BASE_URL (or tierroute's anthropic.base_url) at the URL it prints."
        ),
    )
    parser.add_argument("--data", type=Path, help="recorded-outcome file (.jsonl or .jsonl.gz)")
    parser.add_argument("--host", help="address to bind (default from settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--time-scale", type=float, help="multiplies simulated latency; 0 answers at once"
    )
    parser.add_argument(
        "--trio", choices=("default", "claude"), help="which recorded models play the tiers"
    )
    parser.set_defaults(func=run_replay_server)


def run_replay_server(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """Serve until SIGINT or SIGTERM; returns the process exit code."""
    overrides = {
        name: getattr(args, name)
        for name in ("data", "host", "port", "time_scale", "trio")
        if getattr(args, name, None) is not None
    }
    settings = dataclasses.replace(
        settings, replay=dataclasses.replace(settings.replay, **overrides)
    )
    settings.validate()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ReplayServer.from_settings(settings, environ) as server:
            # The URL is this command's output: scripts read it to set ANTHROPIC_BASE_URL.
            print(f"replay server listening on {server.base_url}", flush=True)
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_hash_token(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    if args.new:
        token = secrets.token_urlsafe(32)
        print(f"token   {token}")
        print(f"sha256  {hash_token(token)}")
        return 0
    # Read from stdin, not argv, so the token stays out of shell history and `ps`.
    token = sys.stdin.readline().strip()
    if not token:
        print("error: no token on standard input", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def add_token_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `hash-token` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "hash-token",
        description="Read a bearer token on standard input and print the SHA-256 hex digest "
        "that goes into the tokens file; with --new, generate a random token first.",
    )
    parser.add_argument(
        "--new", action="store_true", help="generate a new random token and print both"
    )
    parser.set_defaults(func=run_hash_token)
