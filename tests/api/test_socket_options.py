"""Every TCP connection the server accepts or opens sends without Nagle's delay (TCP_NODELAY):
the HTTP door's, the gRPC port's, the replay backend's and the Anthropic SDK's to it. Each
test makes real calls over loopback, then reads the option off the connected sockets of
this process (the server runs in it), so a socket the fix misses fails the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from tests.helpers import Running, make_settings, running_server
from tierroute.api.http.server import HttpServer
from tierroute.providers.anthropic import build_provider
from tierroute.providers.base import Message
from tierroute.providers.replay import ReplayServer, ReplayStore
from tierroute.settings import ReplayConfig
from tierroute.testing import StaticScorer

Address = tuple[str, int]


@dataclass(frozen=True)
class Connection:
    """One connected TCP socket of this process: its two ends and its TCP_NODELAY."""

    local: Address
    peer: Address
    nodelay: bool


def _connections() -> Iterator[Connection]:
    """Every connected TCP socket open in this process, read through a duplicate of its fd."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            duplicate = os.dup(int(name))
        except OSError:
            continue  # closed since the listing
        with socket.socket(fileno=duplicate) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                peer = sock.getpeername()
            except OSError:
                continue  # a listener
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            yield Connection(sock.getsockname()[:2], peer[:2], nodelay)


def _accepted_on(port: int) -> list[Connection]:
    """The server ends of this process's connections to `port`."""
    return [c for c in _connections() if c.local[1] == port]


def _opened_to(port: int) -> list[Connection]:
    """The client ends of this process's connections to `port`."""
    return [c for c in _connections() if c.peer[1] == port]


async def _get(port: int, path: str, writer_reader: list[asyncio.StreamWriter]) -> bytes:
    """One GET on a kept-alive connection, left open; the response's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer_reader.append(writer)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
async def served() -> AsyncIterator[Running]:
    """The real server with its HTTP door and its own replay backend (the Anthropic SDK over
    loopback), no authentication."""
    settings = make_settings({"TIERROUTE_REPLAY_TIME_SCALE": "0"})
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), http=True) as s:
        yield s


@pytest.fixture
async def open_writers() -> AsyncIterator[list[asyncio.StreamWriter]]:
    """Client connections a test leaves open, closed after it."""
    writers: list[asyncio.StreamWriter] = []
    yield writers
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_the_http_door_accepts_connections_without_nagle(
    served: Running, open_writers: list[asyncio.StreamWriter]
) -> None:
    """A kept-alive connection to the Messages API door has TCP_NODELAY on the server's end."""
    port = served.server.http_port
    head = await _get(port, "/v1/models", open_writers)
    assert head.startswith(b"HTTP/1.1 200")
    accepted = _accepted_on(port)
    assert len(accepted) == 1
    assert accepted[0].nodelay


@pytest.mark.parametrize("reuse_port", [False, True], ids=["one-process", "worker-group"])
async def test_the_http_listener_turns_nagle_off_as_workers_bind_it(
    reuse_port: bool, open_writers: list[asyncio.StreamWriter]
) -> None:
    """HttpServer bound as `serve` binds it (SO_REUSEPORT in each worker of a group) gives
    every accepted connection TCP_NODELAY."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    server = HttpServer()
    port = server.bind("127.0.0.1", 0, reuse_port=reuse_port)
    server.start(app)
    try:
        heads = [await _get(port, "/", open_writers) for _ in range(2)]
        assert all(head.startswith(b"HTTP/1.1 200") for head in heads)
        accepted = _accepted_on(port)
        assert len(accepted) == 2
        assert all(c.nodelay for c in accepted)
    finally:
        await server.stop(0)


async def test_grpc_connections_have_nagle_off_at_both_ends(served: Running) -> None:
    """gRPC sets TCP_NODELAY itself on the port's accepted connection and on the channel's."""
    stub = health_pb2_grpc.HealthStub(served.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    accepted, opened = _accepted_on(served.port), _opened_to(served.port)
    assert accepted
    assert opened
    assert all(c.nodelay for c in accepted + opened)


async def test_the_replay_backend_and_the_sdk_have_nagle_off() -> None:
    """After a call through the provider (the Anthropic SDK) to a replay server, their
    connection has TCP_NODELAY at both ends: the SDK's (anyio's connect) and the replay
    server's (its request handler's setup)."""
    settings = make_settings()
    with ReplayServer(ReplayStore(), settings.tiers, ReplayConfig(time_scale=0.0)) as replay:
        provider = build_provider(settings, base_url=replay.base_url)
        try:
            completion = await provider.complete(
                model=settings.tiers[0].model,
                messages=[Message("user", "What is 2 + 2?")],
                max_tokens=64,
                timeout_s=10.0,
            )
            assert completion.text
            port = int(replay.base_url.rsplit(":", 1)[1])
            accepted, opened = _accepted_on(port), _opened_to(port)
            assert len(accepted) == len(opened) == 1
            assert accepted[0].nodelay
            assert opened[0].nodelay
        finally:
            await provider.aclose()
