"""The router's decisions: strategies, rules, policies and sessions, directly on `Router` and
through the Route and Cascade RPCs of the real server on port 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import make_settings, running_server
from tierroute.errors import InvalidRequest, ModelLoadError
from tierroute.providers import Message
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing import Reason, RouteQuery, Router
from tierroute.routing.router import routing_text
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
HARD = StaticScorer((0.1, 0.2, 0.7))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
RECORDS = cascade_records()
# "hard" in the text: only the top tier will do; anything else: the cheap tier.
BY_TEXT = StaticScorer(lambda text: (0.1, 0.1, 0.8) if "hard" in text else (0.9, 0.05, 0.05))


# -- the router on its own -----------------------------------------------------------------


def test_the_sessions_floor_keeps_the_route_up() -> None:
    """A session whose floor is mid routes an easy turn to mid, saying why."""
    router = Router(make_settings(), BY_TEXT)
    decision = router.decide(RouteQuery(text="easy one", session_id="chat-1", session_floor=1))
    assert decision.tier.name == "mid"
    assert decision.reasons[-1].code is Reason.SESSION_STICKY


def test_routing_never_raises_a_sessions_floor() -> None:
    """Deciding a hard turn leaves the session's state alone: routing records nothing."""
    router = Router(make_settings(), BY_TEXT)
    router.decide(RouteQuery(text="hard one", session_id="chat-1"))
    assert router.decide(RouteQuery(text="easy one", session_id="chat-1")).tier.name == "cheap"


def test_without_session_stickiness_each_call_routes_on_its_own() -> None:
    """With routing.session_sticky off, a session's floor is not applied."""
    router = Router(make_settings({"TIERROUTE_ROUTING_SESSION_STICKY": "false"}), BY_TEXT)
    query = RouteQuery(text="easy one", session_id="chat-1", session_floor=2)
    assert router.decide(query).tier.name == "cheap"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RouteQuery(text="q", strategy="self_routing"), "cannot route"),
        (RouteQuery(text="q", rule="magic"), "decision rule"),
        (RouteQuery(text="q", quality_floor=1.5), "quality_floor"),
        (RouteQuery(text="q", max_cost_usd=-1.0), "max_cost_usd"),
    ],
)
def test_an_unusable_strategy_rule_or_policy_is_invalid(query: RouteQuery, message: str) -> None:
    """A strategy or rule the router cannot use, or a policy out of range, is InvalidRequest."""
    with pytest.raises(InvalidRequest, match=message):
        Router(make_settings(), EASY).decide(query)


def test_the_classifier_strategy_needs_a_model() -> None:
    """Without a model the classifier strategy is refused; the heuristic still routes."""
    router = Router(make_settings(), None)
    with pytest.raises(InvalidRequest, match="no model loaded"):
        router.decide(RouteQuery(text="q", strategy="classifier"))
    assert router.decide(RouteQuery(text="q", strategy="heuristic")).tier.name == "cheap"
    assert router.model_version == ""


def test_a_model_for_another_number_of_tiers_is_refused() -> None:
    """A scorer whose thresholds cover another tier count is refused, at start and on swap."""
    two_tiers = StaticScorer((0.5, 0.5), risk=(0.3,), version="two-tier")
    with pytest.raises(ModelLoadError, match="cover 2 tiers"):
        Router(make_settings(), two_tiers)
    router = Router(make_settings(), EASY)
    with pytest.raises(ModelLoadError, match="3 are configured"):
        router.swap_scorer(two_tiers)
    assert router.model_version == "static-test"


def test_earlier_turns_add_a_bounded_window_of_context() -> None:
    """The routed text is the last turns' tail (turns and characters bounded), then the query."""
    history = (Message("user", "a" * 50), Message("assistant", "b" * 50))
    assert routing_text("now?", history, turns=1, chars=10) == "b" * 10 + "\nnow?"
    assert (
        routing_text("now?", history, turns=2, chars=200) == "a" * 50 + "\n" + "b" * 50 + "\nnow?"
    )
    assert routing_text("now?", history, turns=0, chars=200) == "now?"


# -- through the Route and Cascade RPCs ----------------------------------------------------


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


async def test_a_route_call_never_raises_its_sessions_floor() -> None:
    """No model answered a Route, so a hard Route leaves the session free to route cheap."""
    scorer = StaticScorer(lambda text: (0.1, 0.1, 0.8) if "hard" in text else (0.9, 0.05, 0.05))
    async with running_server(scorer=scorer) as s:
        first = await s.stub.Route(pb.RouteRequest(query="hard one", session_id="s1"))
        second = await s.stub.Route(pb.RouteRequest(query="easy one", session_id="s1"))
    assert first.tier.name == "expensive"
    assert second.tier.name == "cheap"
    assert pb.REASON_CODE_SESSION_STICKY not in [r.code for r in second.reasons]


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


async def test_session_remembers_the_tier_a_cascade_escalated_to() -> None:
    """After a Cascade escalates, later Route calls in that session do not route below it."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("wrong")], MID: [Reply.answer("right")]},
        judges={MID: [Reply.verdict(False, ["wrong result"])], TOP: [Reply.verdict(True)]},
    )
    async with running_server(scorer=EASY, provider=provider) as s:
        cascaded = await s.stub.Cascade(
            pb.CascadeRequest(
                query="hard one", session_id="chat-1", judge_mode=pb.JUDGE_MODE_ALWAYS
            )
        )
        same = await s.stub.Route(pb.RouteRequest(query="easy", session_id="chat-1"))
        other_tenant = await s.stub.Route(
            pb.RouteRequest(query="easy", session_id="chat-1", tenant_id="globex")
        )
    assert cascaded.tier.name == "mid"
    assert same.tier.name == "mid"
    assert other_tenant.tier.name == "cheap"


async def test_cascade_starts_on_its_own_thresholds_while_route_keeps_its_own(
    replay_data: Path,
) -> None:
    """Route uses the static thresholds; Cascade starts where its calibrated thresholds say."""
    scorer = StaticScorer((0.5, 0.3, 0.2), risk=(0.1, 0.3), cascade_risk=(0.9, 0.9))
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    query = str(labelled(RECORDS, "cheap")["prompt"])
    async with running_server(settings, scorer=scorer, environ={}) as s:
        routed = await s.stub.Route(pb.RouteRequest(query=query))
        answered = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
    assert routed.tier.name == "mid"  # risk 0.5 > 0.1 on cheap; 0.2 <= 0.3 on mid
    assert answered.route.tier.name == "cheap"  # risk 0.5 <= 0.9 on cheap
    assert answered.route.thresholds["max_risk_cheap"] == pytest.approx(0.9)


async def test_cascade_without_a_judge_starts_where_route_would(replay_data: Path) -> None:
    """With judging turned off, Cascade starts on Route's thresholds, not the cascade's."""
    scorer = StaticScorer((0.5, 0.3, 0.2), risk=(0.1, 0.3), cascade_risk=(0.9, 0.9))
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    query = str(labelled(RECORDS, "cheap")["prompt"])
    async with running_server(settings, scorer=scorer, environ={}) as s:
        judged = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
        unjudged = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_NEVER)
        )
    assert judged.route.tier.name == "cheap"
    assert unjudged.route.tier.name == "mid"
