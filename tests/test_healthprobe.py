"""The container health probe (`python -m tierroute.healthprobe`) against the real server."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import running_server
from tierroute import healthprobe
from tierroute.api.server import SERVICE_NAME
from tierroute.testing import StaticScorer

EASY = StaticScorer((0.9, 0.07, 0.03))


@pytest.fixture
def dead_address() -> Iterator[str]:
    """A loopback address that refuses connections (bound, not listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_serving_server_exits_zero() -> None:
    """A running server answers SERVING and the probe exits 0."""
    async with running_server(scorer=EASY) as s:
        code = await asyncio.to_thread(healthprobe.main, ["--addr", f"127.0.0.1:{s.port}"])
    assert code == 0


async def test_named_service_is_checked() -> None:
    """The TierRouter service itself reports SERVING."""
    async with running_server(scorer=EASY) as s:
        status = await asyncio.to_thread(healthprobe.check, f"127.0.0.1:{s.port}", SERVICE_NAME)
    assert status == "SERVING"


async def test_unknown_service_exits_one() -> None:
    """A service the server does not know is SERVICE_UNKNOWN and exits 1."""
    async with running_server(scorer=EASY) as s:
        args = ["--addr", f"127.0.0.1:{s.port}", "--service", "no.such.Service"]
        code = await asyncio.to_thread(healthprobe.main, args)
        status = await asyncio.to_thread(
            healthprobe.check, f"127.0.0.1:{s.port}", "no.such.Service"
        )
    assert code == 1
    assert status == "SERVICE_UNKNOWN"


def test_unreachable_server_exits_one(dead_address: str) -> None:
    """No server at the address is UNREACHABLE and exits 1."""
    assert healthprobe.check(dead_address, timeout_s=5) == healthprobe.UNREACHABLE
    assert healthprobe.main(["--addr", dead_address, "--timeout", "5"]) == 1


def test_ca_without_tls_is_a_usage_error() -> None:
    """--ca without --tls exits 2 rather than silently probing in plain text."""
    assert healthprobe.main(["--ca", "/nonexistent.pem"]) == 2


async def test_runs_as_a_module() -> None:
    """`python -m tierroute.healthprobe` exits 0 and prints SERVING for a live server."""
    async with running_server(scorer=EASY) as s:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tierroute.healthprobe",
            "--addr",
            f"127.0.0.1:{s.port}",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"SERVING" in out
