"""Validation and conversion between protobuf and the core's domain objects: every input limit
refused as INVALID_ARGUMENT through the real server, and `tierroute.api.convert` called
directly."""

from __future__ import annotations

import math

import grpc
import pytest
from grpc import aio

from tests.helpers import Running, make_settings, running_server
from tierroute.api import convert
from tierroute.errors import QueryTooLong
from tierroute.providers import Message
from tierroute.routing import RouteQuery, Router
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))


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


async def test_blank_earlier_turn_is_invalid_argument() -> None:
    """An empty earlier turn is refused up front instead of failing on every tier."""
    async with running_server(scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(
                pb.RouteRequest(
                    messages=[
                        pb.ChatMessage(role=pb.ROLE_USER, content=""),
                        pb.ChatMessage(role=pb.ROLE_USER, content="hi"),
                    ]
                )
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0] is empty" in (err.value.details() or "")


BAD = {
    "unknown start tier": (pb.CascadeRequest(query="q", start_tier="gold"), "start_tier"),
    "self routing with start tier": (
        pb.CascadeRequest(query="q", strategy=pb.STRATEGY_SELF_ROUTING, start_tier="mid"),
        "self-routing",
    ),
    "output tokens over limit": (
        pb.CascadeRequest(query="q", max_output_tokens=10**6),
        "max_output_tokens",
    ),
    "negative output tokens": (pb.CascadeRequest(query="q", max_output_tokens=-1), "negative"),
    "unknown speculation": (pb.CascadeRequest(query="q", speculation=9), "speculation"),
    "unknown judge mode": (pb.CascadeRequest(query="q", judge_mode=9), "judge_mode"),
    "empty query": (pb.CascadeRequest(query=" "), "query is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_cascade_input_is_invalid_argument(served: Running, case: str) -> None:
    """Each kind of bad Cascade input is INVALID_ARGUMENT with a readable reason."""
    request, message = BAD[case]
    with pytest.raises(aio.AioRpcError) as err:
        await served.stub.Cascade(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


# -- the conversion functions on their own --------------------------------------------------


def test_conversation_splits_system_turns_history_and_the_last_user_turn() -> None:
    """System turns join into one instruction; the last user turn is the text, the rest history."""
    messages = [
        pb.ChatMessage(role=pb.ROLE_SYSTEM, content="be brief"),
        pb.ChatMessage(role=pb.ROLE_USER, content="hi"),
        pb.ChatMessage(role=pb.ROLE_ASSISTANT, content="hello"),
        pb.ChatMessage(role=pb.ROLE_SYSTEM, content="answer in French"),
        pb.ChatMessage(role=pb.ROLE_USER, content="what is 2+2?"),
    ]
    talk = convert.conversation("", messages, make_settings().limits)
    assert talk.text == "what is 2+2?"
    assert talk.history == (Message("user", "hi"), Message("assistant", "hello"))
    assert talk.system == "be brief\nanswer in French"


def test_every_turn_counts_toward_the_length_limit() -> None:
    """The character limit applies to all turns together, not to each one."""
    limits = make_settings({"TIERROUTE_LIMITS_MAX_QUERY_CHARS": "10"}).limits
    assert convert.conversation("x" * 10, [], limits).text == "x" * 10
    turns = [pb.ChatMessage(role=pb.ROLE_USER, content="x" * 6)] * 2
    with pytest.raises(QueryTooLong):
        convert.conversation("", turns, limits)


def test_a_request_without_an_id_gets_a_fresh_one() -> None:
    """A missing request_id becomes a new random hex id per call; a given one is kept."""
    settings = make_settings()
    first = convert.route_query(pb.RouteRequest(query="q"), settings).request_id
    second = convert.route_query(pb.RouteRequest(query="q"), settings).request_id
    kept = convert.route_query(pb.RouteRequest(query="q", request_id="r-1"), settings)
    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != second
    assert kept.request_id == "r-1"


def test_cascade_query_reads_the_modes_and_turns_self_routing_into_a_flag() -> None:
    """Enum modes become the engine's names; self-routing is a flag, not a routing strategy."""
    request = pb.CascadeRequest(
        query="q",
        strategy=pb.STRATEGY_SELF_ROUTING,
        speculation=pb.SPECULATION_MODE_ON,
        judge_mode=pb.JUDGE_MODE_START_ONLY,
        max_output_tokens=100,
    )
    query = convert.cascade_query(request, make_settings(), {"x-tierroute-fault": "529"})
    assert query.self_routing
    assert query.route.strategy is None
    assert (query.speculation, query.judge_mode) == ("on", "start_only")
    assert (query.max_output_tokens, query.start_tier) == (100, None)
    assert query.headers == {"x-tierroute-fault": "529"}


def test_unset_cascade_fields_keep_the_servers_defaults() -> None:
    """Zero values mean "not set": default modes, no output-token cap, no start tier."""
    query = convert.cascade_query(pb.CascadeRequest(query="q"), make_settings(), {})
    assert (query.speculation, query.judge_mode) == ("default", "default")
    assert (query.max_output_tokens, query.start_tier, query.self_routing) == (None, None, False)


def test_route_response_carries_the_decision() -> None:
    """A decision comes back with its tier and prices, scores per tier name and reason codes."""
    settings = make_settings()
    names = [t.name for t in settings.tiers]
    decision = Router(settings, EASY).decide(RouteQuery(text="What is 2+2?"))
    response = convert.route_response(decision, "r-7", names)
    cheap = settings.tiers[0]
    assert response.request_id == "r-7"
    assert (response.tier.name, response.tier.model, response.tier.index) == (
        "cheap",
        cheap.model,
        0,
    )
    assert response.tier.input_usd_per_mtok == pytest.approx(cheap.input_usd_per_mtok)
    assert [(s.tier, round(s.probability, 2)) for s in response.scores] == list(
        zip(names, (0.9, 0.07, 0.03), strict=True)
    )
    assert (response.strategy, response.rule) == (
        pb.STRATEGY_CLASSIFIER,
        pb.DECISION_RULE_CALIBRATED,
    )
    assert [r.code for r in response.reasons] == [pb.REASON_CODE_RISK_WITHIN_THRESHOLD]
    assert response.thresholds["max_risk_cheap"] == pytest.approx(0.3)
