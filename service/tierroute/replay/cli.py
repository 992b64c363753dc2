"""`tierroute replay-server`: run the replay backend on its own until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from tierroute.replay.server import ReplayServer
from tierroute.settings import Settings


def add_replay_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `replay-server` subcommand; its options override the settings."""
    parser = subparsers.add_parser(
        "replay-server",
        help="serve recorded answers as a local Anthropic Messages API",
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


def run_replay_server(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the process exit code."""
    settings = Settings.from_env(os.environ)
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
        with ReplayServer.from_settings(settings) as server:
            # The URL is this command's output: scripts read it to set ANTHROPIC_BASE_URL.
            print(f"replay server listening on {server.base_url}", flush=True)
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
