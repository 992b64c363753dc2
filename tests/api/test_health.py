"""gRPC health checking: the service reports SERVING once started, and each tier's health name
follows its circuit breaker, checked and watched, with or without calls."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import FakeClock, make_settings, running_server
from tierroute.api.health import BreakerHealthServicer, tier_health_name
from tierroute.api.server import SERVICE_NAME
from tierroute.cascade.breaker import BreakerBoard
from tierroute.errors import ProviderOverloaded
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.settings import BreakerConfig, Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
QUESTION = "What is the capital of France?"


async def test_health_reports_serving_after_start() -> None:
    """Health checking answers SERVING for the service and overall once started."""
    async with running_server(scorer=EASY) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        for name in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


class _NoContext:
    """Check only touches its context to abort on an unknown service name."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise AssertionError(f"aborted with {code}: {details}")


async def test_health_check_sees_the_cooldown_end_without_a_call() -> None:
    """A tier's health turns back to SERVING once its cool-down passes, with no call made."""
    clock = FakeClock()
    board = BreakerBoard(["cheap", "mid"], BreakerConfig(failure_threshold=1), clock=clock)
    servicer = BreakerHealthServicer()
    await servicer.follow(board)
    request = health_pb2.HealthCheckRequest(service=tier_health_name("cheap"))
    permit = board.acquire("cheap")
    assert permit is not None
    permit.failure()
    closed, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert (await servicer.Check(request, _NoContext())).status == not_serving
    clock.now += BreakerConfig().cooldown_s
    assert (await servicer.Check(request, _NoContext())).status == closed
    await servicer.close()


SERVER_EASY = StaticScorer((0.9, 0.05, 0.05))


def _server_settings() -> Settings:
    # A cool-down far longer than any test, so an open breaker stays open while it looks.
    return make_settings(
        {
            "TIERROUTE_BREAKER_FAILURE_THRESHOLD": "2",
            "TIERROUTE_BREAKER_COOLDOWN_S": "3600",
            "TIERROUTE_BREAKER_FAILURE_RATE": "0",
        }
    )


def _cascade_request() -> pb.CascadeRequest:
    return pb.CascadeRequest(
        query=QUESTION,
        start_tier="cheap",
        judge_mode=pb.JUDGE_MODE_NEVER,
        speculation=pb.SPECULATION_MODE_OFF,
    )


def _server_provider() -> ScriptedProvider:
    settings = _server_settings()
    cheap, mid = settings.tiers[0].model, settings.tiers[1].model
    return ScriptedProvider(
        answers={
            cheap: [Reply.fail(ProviderOverloaded("overloaded", status_code=529))] * 2,
            mid: [Reply.answer("m")] * 3,
        }
    )


async def _status(channel: Any, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(reply.status)


async def test_open_breaker_shows_in_health_detail_and_metrics_while_serving() -> None:
    """Cheap's health name turns NOT_SERVING when its breaker opens; the service stays SERVING."""
    serving = health_pb2.HealthCheckResponse.SERVING
    async with running_server(
        _server_settings(), scorer=SERVER_EASY, provider=_server_provider()
    ) as s:
        assert await _status(s.channel, tier_health_name("cheap")) == serving
        for _ in range(2):
            await s.stub.Cascade(_cascade_request(), timeout=10)
        skipped = await s.stub.Cascade(_cascade_request(), timeout=10)
        assert skipped.hops[0].outcome == pb.HOP_OUTCOME_SKIPPED
        assert skipped.hops[0].error_kind == "circuit_open"
        assert skipped.escalation_reasons[0].code == pb.REASON_CODE_CIRCUIT_OPEN
        assert await _status(s.channel, tier_health_name("cheap")) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert await _status(s.channel, tier_health_name("mid")) == serving
        assert await _status(s.channel, "") == serving
        assert await _status(s.channel, SERVICE_NAME) == serving
        assert s.server.metrics.breaker_state("cheap") == "open"


async def test_health_watch_streams_the_breaker_opening() -> None:
    """A Watch on cheap's health name sees SERVING, then NOT_SERVING when its breaker opens."""
    async with running_server(
        _server_settings(), scorer=SERVER_EASY, provider=_server_provider()
    ) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=tier_health_name("cheap")))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        for _ in range(2):
            await s.stub.Cascade(_cascade_request(), timeout=10)
        second = await asyncio.wait_for(watch.read(), timeout=10)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
