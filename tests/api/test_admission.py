"""Admission control: calls beyond the in-flight bound are refused at once, probes never."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import Running, make_settings, running_server
from tierroute.api.admission import AdmissionInterceptor
from tierroute.api.security import hash_token
from tierroute.errors import ConfigError
from tierroute.testing import CallGate, StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
# Every deadline here only bounds a broken test; no expected outcome waits on time.
DEADLINE_S = 30


async def _route(stub: Any, query: str, **kwargs: Any) -> pb.RouteResponse:
    response: pb.RouteResponse = await stub.Route(
        pb.RouteRequest(query=query), timeout=DEADLINE_S, **kwargs
    )
    return response


@asynccontextmanager
async def _full_server(
    limit: int, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Running, CallGate, list[asyncio.Task[Any]]]]:
    """A server with `limit` Route calls admitted and held open by a gate."""
    gate = CallGate()
    settings = make_settings({"TIERROUTE_SERVER_MAX_IN_FLIGHT": str(limit)} | (env or {}))
    async with running_server(settings, scorer=EASY, interceptors=[gate]) as s:
        metadata = (("authorization", "Bearer t"),)
        held = [
            asyncio.create_task(_route(s.stub, f"q{i}", metadata=metadata)) for i in range(limit)
        ]
        try:
            await gate.wait_held(limit)
            yield s, gate, held
        finally:
            gate.release()
            await asyncio.gather(*held, return_exceptions=True)


async def test_call_beyond_the_bound_is_resource_exhausted() -> None:
    """With N calls in flight the next one is RESOURCE_EXHAUSTED with a back-off message."""
    async with _full_server(3) as (s, _, _):
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="one more"), timeout=DEADLINE_S)
        assert s.server.admission.in_flight == 3
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == ("server at capacity (3 calls in flight); retry with back-off")


async def test_released_calls_finish_and_new_calls_are_admitted_again() -> None:
    """Once held calls finish, the count drops to zero and new calls succeed."""
    async with _full_server(2) as (s, gate, held):
        gate.release()
        answers = await asyncio.gather(*held)
        after = await s.stub.Route(pb.RouteRequest(query="later"), timeout=DEADLINE_S)
        in_flight = s.server.admission.in_flight
    assert [a.tier.name for a in answers] == ["cheap", "cheap"]
    assert after.tier.name == "cheap"
    assert in_flight == 0


async def test_health_is_served_while_the_server_is_full() -> None:
    """Health checks are exempt: a full server still answers SERVING."""
    async with _full_server(2) as (s, _, _):
        reply = await health_pb2_grpc.HealthStub(s.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=DEADLINE_S
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_refused_calls_are_counted() -> None:
    """Each refusal is counted, for metrics."""
    async with _full_server(1) as (s, _, _):
        for _ in range(2):
            with pytest.raises(aio.AioRpcError):
                await s.stub.Route(pb.RouteRequest(query="x"), timeout=DEADLINE_S)
        refused = s.server.admission.refused
    assert refused == 2


async def test_failed_calls_leave_the_count() -> None:
    """A call that fails (INVALID_ARGUMENT) does not stay counted as in flight."""
    async with running_server(make_settings(), scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError):
            await s.stub.Route(pb.RouteRequest(query=""), timeout=DEADLINE_S)
        assert s.server.admission.in_flight == 0


async def test_admission_refuses_before_authentication(tmp_path: Path) -> None:
    """A full server refuses even an unauthenticated call with RESOURCE_EXHAUSTED: the cheap
    refusal comes first."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(f'{{"tenants": {{"acme": ["{hash_token("t")}"]}}}}')
    async with _full_server(1, {"TIERROUTE_AUTH_TOKENS_FILE": str(tokens)}) as (s, _, _):
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="x"), timeout=DEADLINE_S)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_zero_bound_counts_but_never_refuses() -> None:
    """max_in_flight = 0 turns refusal off: many held calls are all admitted."""
    gate = CallGate()
    settings = make_settings({"TIERROUTE_SERVER_MAX_IN_FLIGHT": "0"})
    async with running_server(settings, scorer=EASY, interceptors=[gate]) as s:
        calls = [asyncio.create_task(_route(s.stub, "q")) for _ in range(20)]
        await gate.wait_held(20)
        in_flight = s.server.admission.in_flight
        gate.release()
        answers = await asyncio.gather(*calls)
    assert in_flight == 20
    assert len(answers) == 20


def test_in_flight_bound_is_configurable_from_the_environment() -> None:
    """TIERROUTE_SERVER_MAX_IN_FLIGHT sets the bound."""
    assert make_settings({"TIERROUTE_SERVER_MAX_IN_FLIGHT": "7"}).server.max_in_flight == 7


def test_bound_must_stay_below_grpc_concurrency_limit() -> None:
    """A bound at or above max_concurrent_rpcs is a ConfigError: gRPC's own refusal would
    come first and would not spare health probes."""
    with pytest.raises(ConfigError, match="max_in_flight"):
        make_settings(
            {
                "TIERROUTE_SERVER_MAX_IN_FLIGHT": "64",
                "TIERROUTE_SERVER_MAX_CONCURRENT_RPCS": "64",
            }
        )


def test_negative_bound_is_rejected() -> None:
    """The interceptor refuses a negative bound outright."""
    with pytest.raises(ValueError, match="negative"):
        AdmissionInterceptor(-1)


async def test_a_draining_server_refuses_new_calls_unavailable() -> None:
    """Once the server drains for shutdown, a new call on an open channel is refused with
    UNAVAILABLE naming the shutdown, not cancelled."""
    async with running_server() as s:
        await s.server.admission.drain(0)
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="What is the capital of France?"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (err.value.details() or "")
