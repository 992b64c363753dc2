"""The gRPC server end to end: a real server on port 0 and a real channel."""

from __future__ import annotations

import asyncio
import contextlib
import math

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers import make_settings, running_server
from tierroute.api.server import SERVICE_NAME
from tierroute.testing import FailingScorer, StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
HARD = StaticScorer((0.1, 0.2, 0.7))


async def test_route_heuristic_picks_cheap_for_a_simple_question() -> None:
    """The heuristic sends a short factual question to the cheapest tier, with its reason."""
    async with running_server(scorer=EASY) as s:
        r = await s.stub.Route(
            pb.RouteRequest(query="What is the capital of France?", strategy=pb.STRATEGY_HEURISTIC)
        )
    assert r.tier.name == "cheap"
    assert r.strategy == pb.STRATEGY_HEURISTIC
    assert [x.code for x in r.reasons] == [pb.REASON_CODE_SIMPLE_QUERY]
    assert r.features.query_type == "factual"


async def test_route_heuristic_sends_long_input_to_the_top_tier() -> None:
    """A query estimated above the long-input limit goes to the top tier."""
    async with running_server(scorer=EASY) as s:
        r = await s.stub.Route(
            pb.RouteRequest(query="word " * 4000, strategy=pb.STRATEGY_HEURISTIC)
        )
    assert r.tier.name == "expensive"
    assert r.reasons[0].code == pb.REASON_CODE_LONG_INPUT


async def test_route_classifier_uses_calibrated_thresholds() -> None:
    """The classifier strategy routes by risk thresholds and reports scores and thresholds."""
    async with running_server(scorer=HARD) as s:
        r = await s.stub.Route(pb.RouteRequest(query="prove it", strategy=pb.STRATEGY_CLASSIFIER))
    assert r.tier.name == "expensive"
    assert [round(x.probability, 3) for x in r.scores] == [0.1, 0.2, 0.7]
    assert r.thresholds["max_risk_cheap"] == pytest.approx(0.3)
    assert r.rule == pb.DECISION_RULE_CALIBRATED
    assert r.model_version == "static-test"
    assert r.request_id


async def test_route_default_strategy_is_the_classifier() -> None:
    """With no strategy the configured default (classifier) decides."""
    async with running_server(scorer=EASY) as s:
        r = await s.stub.Route(pb.RouteRequest(query="hello there"))
    assert r.strategy == pb.STRATEGY_CLASSIFIER
    assert r.tier.name == "cheap"


async def test_route_published_rule_on_request() -> None:
    """A request can ask for the published rule verbatim."""
    async with running_server(scorer=StaticScorer((0.6, 0.33, 0.07))) as s:
        r = await s.stub.Route(
            pb.RouteRequest(query="q", policy=pb.RoutingPolicy(rule=pb.DECISION_RULE_PUBLISHED))
        )
    assert r.tier.name == "mid"
    assert r.rule == pb.DECISION_RULE_PUBLISHED
    assert r.thresholds["published_top"] == pytest.approx(0.15)


async def test_route_quality_floor_moves_the_decision_up() -> None:
    """A quality floor tighter than the threshold moves a cheap decision up."""
    async with running_server(scorer=StaticScorer((0.8, 0.15, 0.05))) as s:
        plain = await s.stub.Route(pb.RouteRequest(query="q"))
        floored = await s.stub.Route(
            pb.RouteRequest(query="q", policy=pb.RoutingPolicy(quality_floor=0.9))
        )
    assert plain.tier.name == "cheap"
    assert floored.tier.name == "mid"
    assert pb.REASON_CODE_QUALITY_FLOOR in [x.code for x in floored.reasons]


async def test_route_cost_ceiling_moves_the_decision_down() -> None:
    """A cost ceiling below the chosen tier's estimate moves the decision down."""
    async with running_server(scorer=HARD) as s:
        r = await s.stub.Route(
            pb.RouteRequest(query="q", policy=pb.RoutingPolicy(max_cost_usd=0.008))
        )
    assert r.tier.name == "mid"
    assert r.reasons[-1].code == pb.REASON_CODE_COST_CEILING
    assert r.estimated_cost_usd <= 0.008


async def test_route_session_never_routes_down() -> None:
    """Within one session a later easy query stays on the tier an earlier one needed."""
    scorer = StaticScorer(lambda text: (0.1, 0.1, 0.8) if "hard" in text else (0.9, 0.05, 0.05))
    async with running_server(scorer=scorer) as s:
        first = await s.stub.Route(pb.RouteRequest(query="hard one", session_id="s1"))
        second = await s.stub.Route(pb.RouteRequest(query="easy one", session_id="s1"))
        other = await s.stub.Route(pb.RouteRequest(query="easy one", session_id="s2"))
    assert first.tier.name == second.tier.name == "expensive"
    assert second.reasons[-1].code == pb.REASON_CODE_SESSION_STICKY
    assert other.tier.name == "cheap"


async def test_route_chat_messages_route_on_the_last_user_turn() -> None:
    """Messages route on the last user turn, with earlier turns as bounded context."""
    scorer = StaticScorer(lambda text: (0.9, 0.05, 0.05))
    async with running_server(scorer=scorer) as s:
        r = await s.stub.Route(
            pb.RouteRequest(
                messages=[
                    pb.ChatMessage(role=pb.ROLE_SYSTEM, content="be brief"),
                    pb.ChatMessage(role=pb.ROLE_USER, content="hi"),
                    pb.ChatMessage(role=pb.ROLE_ASSISTANT, content="hello"),
                    pb.ChatMessage(role=pb.ROLE_USER, content="what is 2+2?"),
                ]
            )
        )
    assert r.tier.name == "cheap"


async def test_health_reports_serving_after_start() -> None:
    """Health checking answers SERVING for the service and overall once started."""
    async with running_server(scorer=EASY) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        for name in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


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


BAD_REQUESTS = {
    "empty": (pb.RouteRequest(query=""), "query is empty"),
    "whitespace": (pb.RouteRequest(query="  \n\t "), "query is empty"),
    "too long": (pb.RouteRequest(query="x" * 200_001), "the limit is 200000"),
    "both inputs": (
        pb.RouteRequest(query="a", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="b")]),
        "not both",
    ),
    "unknown strategy": (pb.RouteRequest(query="a", strategy=99), "strategy 99"),
    "unknown rule": (
        pb.RouteRequest(query="a", policy=pb.RoutingPolicy(rule=7)),
        "policy.rule 7",
    ),
    "self routing": (
        pb.RouteRequest(query="a", strategy=pb.STRATEGY_SELF_ROUTING),
        "use Cascade",
    ),
    "floor above one": (
        pb.RouteRequest(query="a", policy=pb.RoutingPolicy(quality_floor=1.5)),
        "quality_floor",
    ),
    "nan cost": (
        pb.RouteRequest(query="a", policy=pb.RoutingPolicy(max_cost_usd=math.nan)),
        "max_cost_usd",
    ),
    "unknown role": (
        pb.RouteRequest(messages=[pb.ChatMessage(role=42, content="b")]),
        "role 42",
    ),
    "last turn not user": (
        pb.RouteRequest(
            messages=[
                pb.ChatMessage(role=pb.ROLE_USER, content="a"),
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, content="b"),
            ]
        ),
        "must be the user's",
    ),
    "too many messages": (
        pb.RouteRequest(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="a")] * 257),
        "the limit is 256",
    ),
    "metadata entries": (
        pb.RouteRequest(query="a", metadata={f"k{i}": "v" for i in range(65)}),
        "the limit is 64",
    ),
    "long request id": (pb.RouteRequest(query="a", request_id="r" * 129), "request_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_route_input_is_invalid_argument(case: str) -> None:
    """Each kind of bad input is INVALID_ARGUMENT with a message that says what is wrong."""
    request, message = BAD_REQUESTS[case]
    async with running_server(scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_oversized_message_is_resource_exhausted() -> None:
    """A message over the receive limit is refused by gRPC with RESOURCE_EXHAUSTED."""
    settings = make_settings({"TIERROUTE_SERVER_MAX_RECEIVE_MESSAGE_BYTES": "65536"})
    async with running_server(settings, scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="x" * 100_000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_unexpected_failure_is_internal_without_details() -> None:
    """An unexpected exception reaches the caller as INTERNAL with a generic message."""
    async with running_server(scorer=FailingScorer()) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="a", strategy=pb.STRATEGY_CLASSIFIER))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")


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
