"""The Cascade's expected-value policy, served: plans, judge statuses, loading, reload.

Every test talks to the real server on port 0 through a real channel. Plans come from
`StaticScorer(plan=...)` or from a tiny real bundle whose value model is fitted here.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tierroute_client import AsyncTierRouteClient

from tests.fixtures import add_value_policy, make_records, write_dataset
from tests.helpers import Running, make_settings, metric_points, running_server
from tierroute.api.security import hash_token
from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model.bundle import VALUE_CALIBRATION_FILE, VALUE_FILE
from tierroute.model.classifier import RouterModel
from tierroute.model.registry import ModelRegistry
from tierroute.observability.metrics import CASCADE_PLANS
from tierroute.observability.names import ATTR_PLAN, SPAN_ROUTE
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing.plan import ACTIONS, CascadePlan
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
QUESTION = "What is the capital of France?"
# Confident: the default speculative bound (0.6) never speculates on it.
CONFIDENT = (0.9, 0.06, 0.04)
UNSURE = (0.4, 0.35, 0.25)
PRICE = 0.0031
ADMIN_TOKEN = "admin-token-value-policy"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
# Index into ACTIONS of the value model fitted below: it always plans cheap+judge.
FITTED_ACTION = 1


def plan(start: int, judge: str) -> CascadePlan:
    """The plan for action (start, judge), with made-up estimates for every action."""
    index = next(i for i, a in enumerate(ACTIONS) if (a.start, a.judge) == (start, judge))
    p = tuple(0.81 if i == index else 0.5 for i in range(len(ACTIONS)))
    cost = tuple(0.0012 if i == index else 0.002 for i in range(len(ACTIONS)))
    return CascadePlan(index, ACTIONS[index], p, cost, PRICE)


def scorer(value_plan: Any = None, probs: tuple[float, ...] = CONFIDENT) -> StaticScorer:
    """A classifier double that starts Cascades on the cheap tier by its thresholds."""
    return StaticScorer(probs, plan=value_plan)


@asynccontextmanager
async def serving(
    provider: ScriptedProvider, model: StaticScorer, **environ: str
) -> AsyncIterator[Running]:
    """The real server on the scripted provider; judge sampling judges everything unless told."""
    settings = make_settings({"TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "1", **environ})
    async with running_server(settings, scorer=model, provider=provider) as running:
        yield running


def cascade(**kwargs: Any) -> pb.CascadeRequest:
    kwargs.setdefault("query", QUESTION)
    return pb.CascadeRequest(**kwargs)


def codes(reasons: Any) -> list[int]:
    return [r.code for r in reasons]


def roles(response: pb.CascadeResponse) -> list[tuple[str, int]]:
    return [(h.tier, h.role) for h in response.hops]


ANSWER, JUDGE = pb.HOP_ROLE_ANSWER, pb.HOP_ROLE_JUDGE


# -- plans through the Cascade RPC ---------------------------------------------------------


async def test_none_plan_answers_once_and_reports_skipped() -> None:
    """A "none" plan makes one answer call and returns it SKIPPED, though sampling would judge."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, scorer(plan(0, "none"))) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.answer, r.tier.name) == ("Paris", "cheap")
    assert r.judge_status == pb.JUDGE_STATUS_SKIPPED
    assert roles(r) == [("cheap", ANSWER)]


async def test_plan_is_on_the_route_with_its_reason_and_price() -> None:
    """The route carries EXPECTED_VALUE with the action's name, and the price as a threshold."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, scorer(plan(0, "none"))) as s:
        r = await s.stub.Cascade(cascade())
    assert codes(r.route.reasons) == [pb.REASON_CODE_EXPECTED_VALUE]
    assert r.route.reasons[0].detail == (
        "cheap: P(correct) 0.81 at ~$0.0012; price of a correct answer $0.0031"
    )
    assert dict(r.route.thresholds) == {"price_per_correct_usd": pytest.approx(PRICE)}
    assert r.route.confidence == pytest.approx(0.9)
    assert [x.probability for x in r.route.scores] == pytest.approx(list(CONFIDENT))


async def test_plan_chooses_the_start_tier() -> None:
    """A plan starting on mid starts there, although the thresholds would pick cheap."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("Paris")]})
    async with serving(provider, scorer(plan(1, "none"))) as s:
        r = await s.stub.Cascade(cascade())
    assert r.route.tier.name == "mid"
    assert roles(r) == [("mid", ANSWER)]
    assert r.judge_status == pb.JUDGE_STATUS_SKIPPED


async def test_all_plan_judges_the_start_and_the_escalated_answer() -> None:
    """An "all" plan judges the cheap answer and, after escalation, the mid one too."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(False, ["wrong city"])], TOP: [Reply.verdict(True)]},
    )
    async with serving(
        provider, scorer(plan(0, "all")), TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0"
    ) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.answer, r.tier.name) == ("Paris", "mid")
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert roles(r) == [("cheap", ANSWER), ("mid", JUDGE), ("mid", ANSWER), ("expensive", JUDGE)]
    assert codes(r.escalation_reasons) == [pb.REASON_CODE_JUDGE_FAILED]


async def test_start_only_plan_returns_the_escalated_answer_unjudged() -> None:
    """A "start_only" plan judges the cheap answer; the mid answer after it is SKIPPED."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(False, ["wrong city"])]},
    )
    async with serving(provider, scorer(plan(0, "start_only"))) as s:
        r = await s.stub.Cascade(cascade())
    assert (r.answer, r.tier.name) == ("Paris", "mid")
    assert r.judge_status == pb.JUDGE_STATUS_SKIPPED
    assert roles(r) == [("cheap", ANSWER), ("mid", JUDGE), ("mid", ANSWER)]
    assert provider.calls_to(TOP) == []


async def test_start_only_plan_passes_a_good_start_answer() -> None:
    """A "start_only" plan whose start answer passes returns it PASSED."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    async with serving(provider, scorer(plan(0, "start_only"))) as s:
        r = await s.stub.Cascade(cascade())
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert roles(r) == [("cheap", ANSWER), ("mid", JUDGE)]


async def test_top_tier_plan_needs_no_judge() -> None:
    """A plan that starts on the top tier returns NOT_REQUIRED, as every top answer is."""
    provider = ScriptedProvider(answers={TOP: [Reply.answer("Paris")]})
    async with serving(provider, scorer(plan(2, "none"))) as s:
        r = await s.stub.Cascade(cascade())
    assert r.judge_status == pb.JUDGE_STATUS_NOT_REQUIRED
    assert roles(r) == [("expensive", ANSWER)]


async def test_plan_follows_the_text() -> None:
    """A plan computed from the routed text chooses per query."""

    def by_text(text: str) -> CascadePlan:
        return plan(1, "none") if "integral" in text else plan(0, "none")

    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("4")], MID: [Reply.answer("x")]})
    async with serving(provider, scorer(by_text)) as s:
        easy = await s.stub.Cascade(cascade(query="What is 2+2?"))
        hard = await s.stub.Cascade(cascade(query="Solve this integral of x."))
    assert (easy.tier.name, hard.tier.name) == ("cheap", "mid")


async def test_no_plan_keeps_judge_sampling() -> None:
    """A scorer whose plan is None (no value policy) routes and samples as before."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, scorer(None), TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0") as s:
        r = await s.stub.Cascade(cascade())
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT
    assert pb.REASON_CODE_EXPECTED_VALUE not in codes(r.route.reasons)
    assert "price_per_correct_usd" not in r.route.thresholds


async def test_none_plan_does_not_speculate() -> None:
    """With low confidence, a "none" plan makes no parallel call: nothing will be judged."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, scorer(plan(0, "none"), probs=UNSURE)) as s:
        r = await s.stub.Cascade(cascade())
    assert roles(r) == [("cheap", ANSWER)]
    assert not any(h.speculative for h in r.hops)


async def test_judged_plan_speculates_when_unsure() -> None:
    """With low confidence, an "all" plan starts the next tier in parallel, as sampling did."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(True)]},
    )
    async with serving(provider, scorer(plan(0, "all"), probs=UNSURE)) as s:
        r = await s.stub.Cascade(cascade())
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert [(h.tier, h.speculative) for h in r.hops if h.role == ANSWER] == [
        ("cheap", False),
        ("mid", True),
    ]


# -- the request's judge mode --------------------------------------------------------------


async def test_judge_mode_start_only_skips_the_escalated_answer() -> None:
    """JUDGE_MODE_START_ONLY judges the start answer only; the escalated answer is SKIPPED."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(False, ["wrong city"])]},
    )
    async with serving(provider, scorer(None)) as s:
        r = await s.stub.Cascade(cascade(judge_mode=pb.JUDGE_MODE_START_ONLY))
    assert (r.answer, r.judge_status) == ("Paris", pb.JUDGE_STATUS_SKIPPED)
    assert roles(r) == [("cheap", ANSWER), ("mid", JUDGE), ("mid", ANSWER)]


async def test_judge_mode_always_overrides_a_none_plan() -> None:
    """A request's JUDGE_MODE_ALWAYS judges the answer of a "none" plan's start tier."""
    provider = ScriptedProvider(
        answers={MID: [Reply.answer("Paris")]}, judges={TOP: [Reply.verdict(True)]}
    )
    async with serving(provider, scorer(plan(1, "none"))) as s:
        r = await s.stub.Cascade(cascade(judge_mode=pb.JUDGE_MODE_ALWAYS))
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert roles(r) == [("mid", ANSWER), ("expensive", JUDGE)]


async def test_judge_mode_never_uses_no_plan() -> None:
    """JUDGE_MODE_NEVER starts on Route's thresholds without asking the policy: SAMPLED_OUT."""
    model = scorer(plan(1, "all"))
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, model) as s:
        r = await s.stub.Cascade(cascade(judge_mode=pb.JUDGE_MODE_NEVER))
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_SAMPLED_OUT)
    assert model.plan_calls == 0


# -- requests the policy does not cover ---------------------------------------------------


async def test_cost_ceiling_drops_the_plan() -> None:
    """A cost ceiling that moves the start tier drops the plan; judge sampling decides."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(
        provider, scorer(plan(1, "none")), TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0"
    ) as s:
        # 400 output tokens keep the cheap call's worst case within the ceiling.
        r = await s.stub.Cascade(
            cascade(policy=pb.RoutingPolicy(max_cost_usd=0.003), max_output_tokens=400)
        )
    assert r.route.tier.name == "cheap"
    assert codes(r.route.reasons) == [pb.REASON_CODE_EXPECTED_VALUE, pb.REASON_CODE_COST_CEILING]
    assert "value plan dropped" in r.route.reasons[1].detail
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT


async def test_sticky_session_drops_the_plan() -> None:
    """A session that already used mid keeps a cheap plan's Cascade on mid, plan dropped."""

    def by_text(text: str) -> CascadePlan:
        return plan(1, "none") if "integral" in text else plan(0, "none")

    provider = ScriptedProvider(answers={MID: [Reply.answer("x"), Reply.answer("4")]})
    async with serving(provider, scorer(by_text), TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0") as s:
        await s.stub.Cascade(cascade(query="Solve this integral.", session_id="chat-1"))
        r = await s.stub.Cascade(cascade(query="What is 2+2?", session_id="chat-1"))
    assert r.route.tier.name == "mid"
    assert codes(r.route.reasons) == [pb.REASON_CODE_EXPECTED_VALUE, pb.REASON_CODE_SESSION_STICKY]
    assert "value plan dropped" in r.route.reasons[1].detail
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT


async def test_start_tier_override_drops_the_plan() -> None:
    """A caller's start tier other than the plan's drops the plan; judge sampling decides."""
    provider = ScriptedProvider(answers={MID: [Reply.answer("Paris")]})
    async with serving(
        provider, scorer(plan(0, "none")), TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0"
    ) as s:
        r = await s.stub.Cascade(cascade(start_tier="mid"))
    assert r.route.reasons[-1].code == pb.REASON_CODE_TIER_OVERRIDE
    assert "value plan dropped" in r.route.reasons[-1].detail
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT


async def test_quality_floor_uses_the_thresholds() -> None:
    """A request with a quality floor starts on the risk thresholds; the policy is not asked."""
    model = scorer(plan(1, "none"))
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    async with serving(provider, model) as s:
        r = await s.stub.Cascade(cascade(policy=pb.RoutingPolicy(quality_floor=0.5)))
    assert r.route.tier.name == "cheap"
    assert pb.REASON_CODE_EXPECTED_VALUE not in codes(r.route.reasons)
    assert r.route.thresholds["quality_floor"] == pytest.approx(0.5)
    assert "price_per_correct_usd" not in r.route.thresholds
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert model.plan_calls == 0


async def test_published_rule_uses_no_plan() -> None:
    """The published rule routes a Cascade by its fixed thresholds, not by the policy."""
    model = scorer(plan(1, "none"))
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(provider, model, TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0") as s:
        r = await s.stub.Cascade(cascade(policy=pb.RoutingPolicy(rule=pb.DECISION_RULE_PUBLISHED)))
    assert (r.route.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_SAMPLED_OUT)
    assert model.plan_calls == 0


async def test_route_is_unaffected_by_the_policy() -> None:
    """The Route RPC decides on its own thresholds and never asks the value policy."""
    model = scorer(plan(1, "none"))
    async with serving(ScriptedProvider(), model) as s:
        r = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    assert r.tier.name == "cheap"
    assert codes(r.reasons) == [pb.REASON_CODE_RISK_WITHIN_THRESHOLD]
    assert "price_per_correct_usd" not in r.thresholds
    assert model.plan_calls == 0


async def test_model_calibration_off_turns_the_policy_off() -> None:
    """`cascade.use_model_calibration = false` turns the value policy off: sampling decides."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with serving(
        provider,
        scorer(plan(1, "none")),
        TIERROUTE_CASCADE_USE_MODEL_CALIBRATION="false",
        TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="0",
    ) as s:
        r = await s.stub.Cascade(cascade())
    assert r.route.tier.name == "cheap"
    assert pb.REASON_CODE_EXPECTED_VALUE not in codes(r.route.reasons)
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT


# -- telemetry and clients -----------------------------------------------------------------


async def test_plan_is_on_the_route_span_and_counted() -> None:
    """The route span names the plan's action, without text, and the plans metric counts it."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    try:
        async with running_server(
            make_settings(),
            scorer=scorer(plan(0, "start_only")),
            provider=provider,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ) as s:
            await s.stub.Cascade(cascade())
        (route_span,) = [x for x in exporter.get_finished_spans() if x.name == SPAN_ROUTE]
        attributes = dict(route_span.attributes or {})
        assert attributes[ATTR_PLAN] == "cheap+judge_start_only"
        assert not any(QUESTION in str(v) for v in attributes.values())
        points = metric_points(reader, CASCADE_PLANS)
        assert points == [({"action": "cheap+judge_start_only"}, 1)]
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def test_python_client_asks_for_start_only_and_reads_skipped() -> None:
    """The Python client sends judge="start_only" and reports the status as "skipped"."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Lyon")], MID: [Reply.answer("Paris")]},
        judges={MID: [Reply.verdict(False, ["wrong city"])]},
    )
    async with (
        serving(provider, scorer(None)) as s,
        AsyncTierRouteClient(f"127.0.0.1:{s.port}") as client,
    ):
        r = await client.cascade(QUESTION, judge="start_only", speculation=False)
    assert (r.answer, r.judge_status) == ("Paris", "skipped")


async def test_python_client_reads_the_expected_value_reason() -> None:
    """The Python client reports the value policy's reason code by name."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with (
        serving(provider, scorer(plan(0, "none"))) as s,
        AsyncTierRouteClient(f"127.0.0.1:{s.port}") as client,
    ):
        r = await client.cascade(QUESTION)
    assert r.route is not None
    assert [x.code for x in r.route.reasons] == ["EXPECTED_VALUE"]


# -- a real bundle with a value model ------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """A tiny trained bundle (no value policy) and the texts its value model is fitted on."""

    bundle: Path
    prompts: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train a classifier bundle on 300 synthetic records (2 folds)."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("value-policy")
    records = make_records(300)
    data = write_dataset(root / "small.jsonl.gz", records)
    options = TrainOptions(folds=2, compare_none_labels=False, progress=False)
    train_bundle(data, root / "bundle", options)
    return Trained(root / "bundle", [str(r["prompt"]) for r in records])


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def copy_bundle(source: Path, dest: Path, version: str) -> Path:
    """A copy of `source` that calls itself `version`, without any value model."""
    dest.mkdir(parents=True)
    shutil.copyfile(source / "model.onnx", dest / "model.onnx")
    metadata = read_json(source / "metadata.json")
    thresholds = read_json(source / "thresholds.json")
    metadata["model_version"] = thresholds["version"] = version
    (dest / "metadata.json").write_text(json.dumps(metadata))
    (dest / "thresholds.json").write_text(json.dumps(thresholds))
    return dest


def value_bundle(
    trained: Trained,
    dest: Path,
    *,
    version: str = "value-v1",
    edit: Mapping[str, Any] | None = None,
) -> Path:
    """A copy of the trained bundle with a value model fitted and named in thresholds.json.

    The value model learns that the cheap start with judging is always right and every
    action costs the same, so it plans `cheap+judge` for every text. `edit` updates the
    `cascade` section after it is written.
    """
    copy_bundle(trained.bundle, dest, version)
    n = len(trained.prompts)
    quality = np.zeros((n, len(ACTIONS)))
    quality[:, FITTED_ACTION] = 1.0
    # Every action bills the same tokens on every tier: only P(correct) tells them apart.
    tokens = np.zeros((n, len(ACTIONS), 3, 4))
    tokens[..., :2] = 100.0
    add_value_policy(
        dest, trained.prompts, quality, tokens, tiers=make_settings().tiers, edit=dict(edit or {})
    )
    return dest


def bundle_settings(bundle: Path, **environ: str) -> Settings:
    """Test settings serving the bundle in `bundle`."""
    return make_settings({"TIERROUTE_MODEL_DIR": str(bundle), **environ})


async def test_loaded_bundle_plans_through_the_server(trained: Trained, tmp_path: Path) -> None:
    """A bundle whose cascade policy is "value" starts Cascades on its value model's plan."""
    bundle = value_bundle(trained, tmp_path / "bundle")
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    async with running_server(bundle_settings(bundle), provider=provider) as s:
        r = await s.stub.Cascade(cascade(query=trained.prompts[0]))
        route = await s.stub.Route(pb.RouteRequest(query=trained.prompts[0]))
    assert codes(r.route.reasons) == [pb.REASON_CODE_EXPECTED_VALUE]
    assert r.route.reasons[0].detail.startswith("cheap+judge: P(correct) 1.00")
    parity = read_json(bundle / "thresholds.json")["cascade"]["value"]["operating_points"]["parity"]
    assert r.route.thresholds["price_per_correct_usd"] == pytest.approx(
        parity["price_per_correct_usd"]
    )
    assert r.route.model_version == "value-v1"
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_PASSED)
    assert pb.REASON_CODE_EXPECTED_VALUE not in codes(route.reasons)


def test_router_model_loads_the_value_model(trained: Trained, tmp_path: Path) -> None:
    """RouterModel.load reads the value model; cascade_plan returns its plan for any text."""
    bundle = value_bundle(trained, tmp_path / "bundle")
    model = RouterModel.load(bundle, 3)
    model.warm_up()
    plan_ = model.cascade_plan("What is the capital of France?")
    assert plan_ is not None
    assert plan_.action == ACTIONS[FITTED_ACTION]
    assert len(plan_.p_correct) == len(plan_.cost_usd) == len(ACTIONS)
    section = read_json(bundle / "thresholds.json")["cascade"]["value"]
    assert plan_.price_per_correct_usd == section["price_per_correct_usd"]
    assert plan_.operating_point == section["default_operating_point"] == "parity"


def test_bundle_without_the_section_has_no_plan(trained: Trained) -> None:
    """A bundle whose thresholds name no value policy loads as before, with no plans."""
    model = RouterModel.load(trained.bundle, 3)
    assert model.value_model is None
    assert model.cascade_plan("What is the capital of France?") is None


def test_risk_policy_is_the_default(trained: Trained, tmp_path: Path) -> None:
    """`cascade.policy = "thresholds"` names the thresholds path: no value model is loaded."""
    bundle = value_bundle(trained, tmp_path / "bundle", edit={"policy": "thresholds"})
    assert RouterModel.load(bundle, 3).cascade_plan("anything") is None


def edit_cascade(bundle: Path, **changes: Any) -> None:
    """Update the `cascade` section of the bundle's thresholds.json."""
    thresholds = read_json(bundle / "thresholds.json")
    thresholds["cascade"].update(changes)
    (bundle / "thresholds.json").write_text(json.dumps(thresholds))


def _missing(bundle: Path) -> None:
    (bundle / VALUE_FILE).unlink()


def _wrong_sha(bundle: Path) -> None:
    (bundle / VALUE_FILE).write_bytes((bundle / VALUE_FILE).read_bytes() + b"\0")


def _corrupt(bundle: Path) -> None:
    # The recorded hash matches: onnxruntime itself must refuse the file.
    junk = b"not an onnx model"
    (bundle / VALUE_FILE).write_bytes(junk)
    section = read_json(bundle / "thresholds.json")["cascade"]["value"]
    edit_cascade(bundle, value={**section, "sha256": hashlib.sha256(junk).hexdigest()})


def _bad_actions(bundle: Path) -> None:
    section = read_json(bundle / "thresholds.json")["cascade"]["value"]
    edit_cascade(bundle, value={**section, "actions": [{"start": 7, "judge": "all"}]})


def _bad_prefix(bundle: Path) -> None:
    section = read_json(bundle / "thresholds.json")["cascade"]["value"]
    edit_cascade(bundle, value={**section, "prefix_chars": 0})


def _missing_calibration_data(bundle: Path) -> None:
    (bundle / VALUE_CALIBRATION_FILE).unlink()


def _changed_calibration_data(bundle: Path) -> None:
    path = bundle / VALUE_CALIBRATION_FILE
    path.write_bytes(path.read_bytes() + b"\0")


def _unknown_default_point(bundle: Path) -> None:
    section = read_json(bundle / "thresholds.json")["cascade"]["value"]
    edit_cascade(bundle, value={**section, "default_operating_point": "cheapest"})


def _unknown_policy(bundle: Path) -> None:
    edit_cascade(bundle, policy="bandit")


def _no_value_section(bundle: Path) -> None:
    edit_cascade(bundle, value=None)


# Each breaks a value bundle; the file the start-up error must name.
BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing value.onnx": (_missing, VALUE_FILE),
    "wrong sha": (_wrong_sha, VALUE_FILE),
    "corrupt value.onnx": (_corrupt, VALUE_FILE),
    "bad actions": (_bad_actions, "thresholds.json"),
    "bad prefix_chars": (_bad_prefix, "thresholds.json"),
    "unknown policy": (_unknown_policy, "thresholds.json"),
    "missing calibration data": (_missing_calibration_data, VALUE_CALIBRATION_FILE),
    "changed calibration data": (_changed_calibration_data, VALUE_CALIBRATION_FILE),
    "unknown default point": (_unknown_default_point, "thresholds.json"),
    "no value section": (_no_value_section, "thresholds.json"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_broken_value_policy_fails_start_up_naming_the_file(
    trained: Trained, tmp_path: Path, case: str
) -> None:
    """A broken value policy fails server start-up with ModelLoadError naming the file."""
    breaks, named = BROKEN[case]
    bundle = value_bundle(trained, tmp_path / "bundle")
    breaks(bundle)
    with pytest.raises(ModelLoadError, match=re.escape(str(bundle / named))):
        async with running_server(bundle_settings(bundle), provider=ScriptedProvider()):
            pass


# -- reload and rollback -------------------------------------------------------------------


def admin_settings(tmp_path: Path, bundle: Path, **environ: str) -> Settings:
    """Settings serving `bundle` with auth on and one admin token (ReloadModel needs it)."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {}, "admin": [hash_token(ADMIN_TOKEN)]}))
    return bundle_settings(bundle, TIERROUTE_AUTH_TOKENS_FILE=str(tokens), **environ)


async def start_reason(running: Running, text: str) -> list[int]:
    """The reason codes of the start tier of one Cascade of `text`."""
    r = await running.stub.Cascade(cascade(query=text), metadata=ADMIN)
    return codes(r.route.reasons)


async def test_reload_turns_the_policy_on_and_rollback_off(
    trained: Trained, tmp_path: Path
) -> None:
    """ReloadModel of a value bundle starts plans; RollbackModel to the old bundle ends them."""
    served = copy_bundle(trained.bundle, tmp_path / "served", "plain-v1")
    # The plain bundle may start anywhere: every tier answers, every judge passes.
    provider = ScriptedProvider(
        answers={model: [Reply.answer("Paris")] * 3 for model in (CHEAP, MID, TOP)},
        judges={model: [Reply.verdict(True)] * 3 for model in (MID, TOP)},
    )
    settings = admin_settings(tmp_path, served, TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="1")
    text = trained.prompts[0]
    async with running_server(settings, provider=provider) as s:
        before = await start_reason(s, text)
        shutil.rmtree(served)
        value_bundle(trained, served, version="value-v2")
        reloaded = await s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN)
        during = await start_reason(s, text)
        rolled = await s.stub.RollbackModel(pb.RollbackModelRequest(), metadata=ADMIN)
        after = await start_reason(s, text)
    assert pb.REASON_CODE_EXPECTED_VALUE not in before
    assert (reloaded.previous_version, reloaded.version) == ("plain-v1", "value-v2")
    assert during == [pb.REASON_CODE_EXPECTED_VALUE]
    assert rolled.version == "plain-v1"
    assert pb.REASON_CODE_EXPECTED_VALUE not in after


async def test_registry_version_with_a_value_model_reloads(
    trained: Trained, tmp_path: Path
) -> None:
    """A value bundle added to the model registry keeps its value model and reloads."""
    seed = copy_bundle(trained.bundle, tmp_path / "seed", "plain-v1")
    registry = ModelRegistry(tmp_path / "models", seed=seed)
    registry.ensure_seeded()
    version = registry.add(value_bundle(trained, tmp_path / "value", version="value-v2"))
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("Paris")]}, judges={MID: [Reply.verdict(True)]}
    )
    settings = admin_settings(
        tmp_path, seed, TIERROUTE_ROUTING_REGISTRY_DIR=str(tmp_path / "models")
    )
    async with running_server(settings, provider=provider) as s:
        await s.stub.ReloadModel(pb.ReloadModelRequest(version=version), metadata=ADMIN)
        reasons = await start_reason(s, trained.prompts[0])
    assert reasons == [pb.REASON_CODE_EXPECTED_VALUE]


def test_the_registry_refuses_a_value_bundle_without_its_value_model(
    trained: Trained, tmp_path: Path
) -> None:
    """What every server would refuse at load is refused at the registry's door."""
    seed = copy_bundle(trained.bundle, tmp_path / "seed", "plain-v1")
    registry = ModelRegistry(tmp_path / "models", seed=seed)
    bundle = value_bundle(trained, tmp_path / "value", version="value-v3")
    (bundle / "value.onnx").unlink()
    with pytest.raises(ModelLoadError, match="value model file not found"):
        registry.add(bundle)
    bundle = value_bundle(trained, tmp_path / "changed", version="value-v4")
    (bundle / "value.onnx").write_bytes(b"something else")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        registry.add(bundle)


def test_a_recalibrated_bundle_cannot_replace_a_published_version(
    trained: Trained, tmp_path: Path
) -> None:
    """A version is immutable: the same model with other thresholds is refused, not ignored."""
    seed = copy_bundle(trained.bundle, tmp_path / "seed", "plain-v1")
    registry = ModelRegistry(tmp_path / "models", seed=seed)
    registry.add(value_bundle(trained, tmp_path / "first", version="value-v5"))
    again = value_bundle(
        trained, tmp_path / "second", version="value-v5", edit={"speculative_bound": 0.1}
    )
    with pytest.raises(ConfigError, match=r"already holds a different value-v5: .*thresholds"):
        registry.add(again)
    # The identical bundle is still accepted (idempotent).
    assert registry.add(value_bundle(trained, tmp_path / "third", version="value-v5"))


def _with_judge_rate(bundle: Path, rate: float) -> Path:
    """`bundle` with a calibrated cascade section that judges a `rate` share (no value)."""
    thresholds = read_json(bundle / "thresholds.json")
    section = dict(thresholds.get("cascade") or {})
    section.pop("policy", None)
    section.pop("value", None)
    section.update(judge_sample_rate=rate, judge_sample_rates=[], speculative_bound=0.0)
    thresholds["cascade"] = section
    (bundle / "thresholds.json").write_text(json.dumps(thresholds))
    return bundle


async def test_a_hot_reload_brings_the_new_bundles_judge_rates(
    trained: Trained, tmp_path: Path
) -> None:
    """Judge sampling follows the model serving the call: a reloaded bundle's calibrated
    rates apply at once, and a rollback brings the old ones back, with no restart.
    """
    served = _with_judge_rate(copy_bundle(trained.bundle, tmp_path / "served", "rate-0"), 0.0)
    provider = ScriptedProvider(
        answers={model: [Reply.answer("Paris")] * 3 for model in (CHEAP, MID, TOP)},
        judges={model: [Reply.verdict(True)] * 3 for model in (MID, TOP)},
    )
    # The configured rate (1) is what the bundle's calibration overrides.
    settings = admin_settings(tmp_path, served, TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="1")
    request = cascade(query=trained.prompts[0], start_tier="cheap")
    async with running_server(settings, provider=provider) as s:
        before = await s.stub.Cascade(request, metadata=ADMIN)
        shutil.rmtree(served)
        _with_judge_rate(copy_bundle(trained.bundle, served, "rate-1"), 1.0)
        await s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN)
        during = await s.stub.Cascade(request, metadata=ADMIN)
        await s.stub.RollbackModel(pb.RollbackModelRequest(), metadata=ADMIN)
        after = await s.stub.Cascade(request, metadata=ADMIN)
    assert before.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT
    assert during.judge_status == pb.JUDGE_STATUS_PASSED
    assert after.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT


async def test_use_model_calibration_false_keeps_the_configured_rates_across_reloads(
    trained: Trained, tmp_path: Path
) -> None:
    """With the switch off, neither the served nor a reloaded bundle's rates apply."""
    served = _with_judge_rate(copy_bundle(trained.bundle, tmp_path / "served", "rate-0"), 0.0)
    provider = ScriptedProvider(
        answers={model: [Reply.answer("Paris")] * 2 for model in (CHEAP, MID, TOP)},
        judges={model: [Reply.verdict(True)] * 2 for model in (MID, TOP)},
    )
    settings = admin_settings(
        tmp_path,
        served,
        TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="1",
        TIERROUTE_CASCADE_USE_MODEL_CALIBRATION="false",
    )
    request = cascade(query=trained.prompts[0], start_tier="cheap")
    async with running_server(settings, provider=provider) as s:
        before = await s.stub.Cascade(request, metadata=ADMIN)
        shutil.rmtree(served)
        _with_judge_rate(copy_bundle(trained.bundle, served, "rate-0b"), 0.0)
        await s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN)
        after = await s.stub.Cascade(request, metadata=ADMIN)
    assert before.judge_status == pb.JUDGE_STATUS_PASSED
    assert after.judge_status == pb.JUDGE_STATUS_PASSED


async def test_a_bundle_recalibrated_in_place_under_its_version_reloads_its_rates(
    trained: Trained, tmp_path: Path
) -> None:
    """Same version, new calibration (calibrate run in model_dir, then ReloadModel): the new
    rates apply; the engine does not mistake it for the model it already knows.
    """
    served = _with_judge_rate(copy_bundle(trained.bundle, tmp_path / "served", "same-v1"), 0.0)
    provider = ScriptedProvider(
        answers={model: [Reply.answer("Paris")] * 2 for model in (CHEAP, MID, TOP)},
        judges={model: [Reply.verdict(True)] * 2 for model in (MID, TOP)},
    )
    settings = admin_settings(tmp_path, served, TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE="1")
    request = cascade(query=trained.prompts[0], start_tier="cheap")
    async with running_server(settings, provider=provider) as s:
        before = await s.stub.Cascade(request, metadata=ADMIN)
        _with_judge_rate(served, 1.0)
        await s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN)
        after = await s.stub.Cascade(request, metadata=ADMIN)
    assert before.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT
    assert after.judge_status == pb.JUDGE_STATUS_PASSED
