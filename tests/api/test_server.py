"""The server's lifecycle on port 0 behind a real channel: reflection, the message limit, a
start-up that fails without leaving anything running, draining and stopping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers import make_settings, running_server
from tierroute.api.server import SERVICE_NAME, TierRouteServer
from tierroute.errors import ConfigError
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
HARD = StaticScorer((0.1, 0.2, 0.7))


async def test_reflection_lists_the_service() -> None:
    """Server reflection lists TierRouter, health and reflection."""
    async with running_server(scorer=EASY) as s:
        stub = reflection_pb2_grpc.ServerReflectionStub(s.channel)
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = [svc.name for svc in reply.list_services_response.service]
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_oversized_message_is_resource_exhausted() -> None:
    """A message over the receive limit is refused by gRPC with RESOURCE_EXHAUSTED."""
    settings = make_settings({"TIERROUTE_SERVER_MAX_RECEIVE_MESSAGE_BYTES": "65536"})
    async with running_server(settings, scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="x" * 100_000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_draining_server_reports_not_serving_but_still_answers() -> None:
    """On stop the server reports NOT_SERVING first and keeps answering during the drain."""
    async with running_server(scorer=EASY) as s:
        watch = health_pb2_grpc.HealthStub(s.channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
        first = await watch.read()
        stopping = asyncio.create_task(s.server.stop(0, drain_s=3600))
        second = await watch.read()
        during_drain = await s.stub.Route(pb.RouteRequest(query="still there?"))
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert during_drain.tier.name == "cheap"


async def test_stop_ends_health_watch_streams() -> None:
    """Stopping ends open health Watch streams, so shutdown need not wait out the grace."""
    async with running_server(scorer=EASY) as s:
        watch = health_pb2_grpc.HealthStub(s.channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
        await watch.read()
        stopping = asyncio.create_task(s.server.stop(3600))
        statuses = []
        while (reply := await watch.read()) is not aio.EOF:
            statuses.append(reply.status)
        await stopping  # finished: no stream held the hour-long grace period open
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await watch.code() == grpc.StatusCode.OK


async def test_failed_start_up_leaves_nothing_running(tmp_path: Path) -> None:
    """A start-up that fails after the query log started releases it (and the port)."""
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "TIERROUTE_ANTHROPIC_BACKEND": "anthropic",  # and no API key: cannot work
        }
    )
    for _ in range(2):  # the second attempt would find the spool locked if it leaked
        with pytest.raises(ConfigError, match=r"api_key|API key|ANTHROPIC"):
            await TierRouteServer(settings, scorer=EASY).start("127.0.0.1", 0)


async def test_start_up_heap_is_frozen_out_of_the_collector() -> None:
    """What exists when the server reports SERVING is moved out of the cyclic collector's
    generations (gc.freeze), so that full collections under load do not walk the model and
    settings again; objects made later are collected as usual."""
    before = [object()]  # a container the collector tracks
    gc.collect()
    assert any(o is before for o in gc.get_objects())
    async with running_server(scorer=EASY) as s:
        assert not any(o is before for o in gc.get_objects())  # frozen
        after = [object()]
        assert any(o is after for o in gc.get_objects())
        assert (await s.stub.Route(pb.RouteRequest(query="What is 2+2?"))).tier.name
