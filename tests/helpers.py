"""Test helpers: settings for tests and a real server on port 0 behind a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from grpc import aio

from tierroute.api.server import TierRouteServer
from tierroute.routing.router import Scorer
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc


def make_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the bundled config plus `environ`, never the process environment.

    The query log is off unless the test turns it on, so no test writes into the checkout.
    """
    return Settings.from_env({"TIERROUTE_QUERYLOG_ENABLED": "false", **(environ or {})})


@dataclass
class Running:
    """A started server and a stub on a channel to it."""

    server: TierRouteServer
    channel: aio.Channel
    stub: Any
    port: int


@asynccontextmanager
async def running_server(
    settings: Settings | None = None, *, scorer: Scorer | None = None, **kwargs: Any
) -> AsyncIterator[Running]:
    """Start the real server on 127.0.0.1:0 with the factory `tierroute serve` uses.

    Without an injected provider the server starts its own replay backend; unless the test
    says otherwise it serves synthetic answers only (no data file), which starts fast.
    """
    kwargs.setdefault("environ", {"TIERROUTE_DATA": "/nonexistent/tierroute-test-data"})
    server = TierRouteServer(settings or make_settings(), scorer=scorer, **kwargs)
    port = await server.start("127.0.0.1", 0)
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(server, channel, pb_grpc.TierRouterStub(channel), port)
    finally:
        await channel.close()
        await server.stop(0)
