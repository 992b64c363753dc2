"""Unfamiliar queries through the real server: features.familiarity, UNFAMILIAR_QUERY, and
what routing.on_unfamiliar gives them on Route and Cascade (scripted provider)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tierroute_client import AsyncTierRouteClient

from tests.helpers import make_settings, metric_points, running_server
from tierroute.observability.metrics import UNFAMILIAR
from tierroute.observability.names import ATTR_FAMILIARITY, ATTR_UNFAMILIAR, SPAN_ROUTE
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing import MIN_FAMILIARITY
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
PROBE = "claude-3-haiku-20240307"
QUESTION = "What is the capital of France?"
THRESHOLD = 0.3
# Sure the top tier is needed: what a TF-IDF model's class prior looks like on text it
# does not know.
TOP_SURE = (0.02, 0.08, 0.9)


def scorer(familiarity: float | None, probs: tuple[float, ...] = TOP_SURE) -> StaticScorer:
    """A classifier that sends `probs` and the given familiarity (threshold 0.3)."""
    return StaticScorer(probs, familiarity=familiarity, familiarity_threshold=THRESHOLD)


def codes(reasons: object) -> list[int]:
    return [r.code for r in reasons]  # type: ignore[attr-defined]


def settings(**environ: str) -> object:
    return make_settings({"TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0", **environ})


def cascade(**fields: object) -> pb.CascadeRequest:
    return pb.CascadeRequest(query=QUESTION, speculation=pb.SPECULATION_MODE_OFF, **fields)  # type: ignore[arg-type]


async def test_route_carries_familiarity_and_no_reason_when_familiar() -> None:
    """Above the threshold: features.familiarity is set, no UNFAMILIAR_QUERY, the classifier
    decides, and the threshold is among the decision's thresholds."""
    async with running_server(settings(), scorer=scorer(0.8)) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert r.features.familiarity == pytest.approx(0.8)
    assert pb.REASON_CODE_UNFAMILIAR_QUERY not in codes(r.reasons)
    assert r.tier.name == "expensive"
    assert r.thresholds[MIN_FAMILIARITY] == THRESHOLD


async def test_route_without_the_signal_leaves_familiarity_unset() -> None:
    """A model without the signal: features.familiarity is absent, not 0."""
    async with running_server(settings(), scorer=StaticScorer(TOP_SURE)) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert not r.features.HasField("familiarity")
    assert MIN_FAMILIARITY not in r.thresholds


async def test_route_of_an_unfamiliar_query_names_the_cheap_start() -> None:
    """Default on_unfamiliar (check): Route answers where a Cascade starts, the cheapest
    tier, with UNFAMILIAR_QUERY as its only reason."""
    async with running_server(settings(), scorer=scorer(0.05)) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert r.tier.name == "cheap"
    assert codes(r.reasons) == [pb.REASON_CODE_UNFAMILIAR_QUERY]
    assert "familiarity 0.050 < 0.300" in r.reasons[0].detail
    assert r.features.familiarity == pytest.approx(0.05)


async def test_route_with_on_unfamiliar_reference_names_the_reference_tier() -> None:
    """on_unfamiliar = reference with reference_tier = mid: Route names mid."""
    env = {
        "TIERROUTE_ROUTING_ON_UNFAMILIAR": "reference",
        "TIERROUTE_ROUTING_REFERENCE_TIER": "mid",
    }
    async with running_server(settings(**env), scorer=scorer(0.05)) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert (r.tier.name, codes(r.reasons)) == ("mid", [pb.REASON_CODE_UNFAMILIAR_QUERY])


async def test_on_unfamiliar_classifier_keeps_the_decision_and_adds_the_reason() -> None:
    """on_unfamiliar = classifier: the risk thresholds decide (top), the reason code leads."""
    env = {"TIERROUTE_ROUTING_ON_UNFAMILIAR": "classifier"}
    async with running_server(settings(**env), scorer=scorer(0.05)) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert r.tier.name == "expensive"
    assert codes(r.reasons)[0] == pb.REASON_CODE_UNFAMILIAR_QUERY
    assert pb.REASON_CODE_RISK_ABOVE_THRESHOLD in codes(r.reasons)


async def test_unfamiliar_cascade_ships_the_cheap_answer_the_probe_agrees_with() -> None:
    """Check: cheap and probe state the same final answer: cheap ships AGREED; no judge,
    no mid or top call."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("The answer is (B).")], PROBE: [Reply.answer("Answer: B")]}
    )
    async with running_server(settings(), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_AGREED)
    assert codes(r.route.reasons) == [pb.REASON_CODE_UNFAMILIAR_QUERY]
    assert r.route.features.familiarity == pytest.approx(0.05)
    assert not provider.calls_to(MID)
    assert not provider.calls_to(TOP)


async def test_unfamiliar_cascade_goes_to_the_reference_tier_on_a_disagreement() -> None:
    """Check: cheap and probe disagree: the reference tier (the top, by default) answers
    the plain question; mid is skipped."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.answer("The answer is (A).")],
            PROBE: [Reply.answer("The answer is (C).")],
            TOP: [Reply.answer("The answer is (C).")],
        }
    )
    async with running_server(settings(), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.tier.name, r.judge_status) == ("expensive", pb.JUDGE_STATUS_NOT_REQUIRED)
    assert codes(r.escalation_reasons) == [pb.REASON_CODE_ANSWERS_DISAGREE]
    assert not provider.calls_to(MID)


async def test_unfamiliar_open_answer_is_judged_by_the_tier_above() -> None:
    """Check: a cheap answer with no final answer is judged by mid; a pass ships it."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Reverse it with slicing: items[::-1].")]},
        judges={MID: [Reply.verdict(True)]},
    )
    async with running_server(settings(), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_PASSED)
    assert not provider.calls_to(TOP)


async def test_unfamiliar_open_answer_failed_by_the_judge_goes_to_the_reference_tier() -> None:
    """Check: mid fails the cheap answer: the reference tier answers with the judge's
    issues, unchecked; mid never answers."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.answer("Use reverse() on the string.")],
            TOP: [Reply.answer("Slice it: items[::-1], or items.reverse() in place.")],
        },
        judges={MID: [Reply.verdict(False, ["strings have no reverse()"])]},
    )
    async with running_server(settings(), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert r.tier.name == "expensive"
    assert codes(r.escalation_reasons) == [pb.REASON_CODE_JUDGE_FAILED]
    assert [h.tier for h in r.hops if h.role == pb.HOP_ROLE_ANSWER] == ["cheap", "expensive"]


async def test_a_mid_reference_tier_answers_unchecked_on_doubt() -> None:
    """reference_tier = mid: a disagreement goes to mid, whose answer ships SKIPPED."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.answer("The answer is (A).")],
            PROBE: [Reply.answer("The answer is (C).")],
            MID: [Reply.answer("The answer is (D).")],
        }
    )
    env = {"TIERROUTE_ROUTING_REFERENCE_TIER": "mid"}
    async with running_server(settings(**env), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.tier.name, r.judge_status) == ("mid", pb.JUDGE_STATUS_SKIPPED)
    assert not provider.calls_to(TOP)


async def test_on_unfamiliar_reference_starts_the_cascade_there() -> None:
    """on_unfamiliar = reference: the Cascade starts on the reference tier (the top)."""
    provider = ScriptedProvider(answers={TOP: [Reply.answer("Paris.")]})
    env = {"TIERROUTE_ROUTING_ON_UNFAMILIAR": "reference"}
    async with running_server(settings(**env), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.route.tier.name, r.tier.name) == ("expensive", "expensive")
    assert not provider.calls_to(CHEAP)


async def test_a_caller_start_tier_drops_the_check() -> None:
    """start_tier = mid on an unfamiliar query: the check is dropped, the override says so."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("Paris.")]})
    async with running_server(settings(), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade(start_tier="mid"))
    assert r.tier.name == "mid"
    assert "unfamiliar check dropped" in r.route.reasons[-1].detail
    assert not provider.calls_to(PROBE)


async def test_familiarity_is_on_the_route_span_and_in_the_metrics() -> None:
    """The route span carries familiarity and the flag (no text); the unfamiliar counter
    counts the call by how it was served."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        async with running_server(
            settings(),
            scorer=scorer(0.05),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ) as s:
            await s.stub.Route(pb.RouteRequest(query=QUESTION))
        (span,) = [x for x in exporter.get_finished_spans() if x.name == SPAN_ROUTE]
        attributes = dict(span.attributes or {})
        assert (attributes[ATTR_FAMILIARITY], attributes[ATTR_UNFAMILIAR]) == (0.05, True)
        assert not any(QUESTION in str(v) for v in attributes.values())
        points = metric_points(reader, UNFAMILIAR)
        assert points == [({"rpc": "route", "handling": "check"}, 1)]
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def test_python_client_reads_familiarity() -> None:
    """The Python client's RouteResult.features.familiarity is the server's."""
    async with (
        running_server(settings(), scorer=scorer(0.05)) as s,
        AsyncTierRouteClient(f"127.0.0.1:{s.port}") as client,
    ):
        r = await client.route(QUESTION)
    assert r.features.familiarity is not None
    assert abs(r.features.familiarity - 0.05) < 1e-6
    assert r.reasons[0].code == "UNFAMILIAR_QUERY"


async def test_a_cascade_that_checks_nothing_starts_on_the_reference_tier() -> None:
    """JUDGE_MODE_NEVER on an unfamiliar query: nothing would check a cheap answer, so the
    reference tier (mid here) answers, not the cheapest unchecked."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("Paris.")]})
    env = {"TIERROUTE_ROUTING_REFERENCE_TIER": "mid"}
    async with running_server(settings(**env), scorer=scorer(0.05), provider=provider) as s:
        r = await s.stub.Cascade(cascade(judge_mode=pb.JUDGE_MODE_NEVER))
    assert (r.route.tier.name, r.tier.name) == ("mid", "mid")
    assert codes(r.route.reasons) == [pb.REASON_CODE_UNFAMILIAR_QUERY]
    assert not provider.calls_to(CHEAP)
