"""`policy.operating_point` through the real gRPC server: a request picks the value
policy's trade-off; a name the served model does not ship is INVALID_ARGUMENT."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tierroute_client import AsyncTierRouteClient

from tests.fixtures import add_value_policy, make_records, write_dataset
from tests.helpers import make_settings, running_server
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing.plan import ACTIONS
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A small trained bundle whose value policy trades the top tier (always right, dear)
    against the cheap one (right half the time, cheap)."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("operating-point")
    records = make_records(300)
    data = write_dataset(root / "small.jsonl.gz", records)
    train_bundle(data, root / "bundle", TrainOptions(folds=2, compare_none_labels=False))
    prompts = [str(r["prompt"]) for r in records]
    n = len(prompts)
    quality = np.zeros((n, len(ACTIONS)))
    quality[:, 5] = 1.0
    quality[::2, 0] = 1.0
    tokens = np.zeros((n, len(ACTIONS), 3, 4))
    for index, action in enumerate(ACTIONS):
        tokens[:, index, action.start, :2] = (400.0, 300.0)
    add_value_policy(root / "bundle", prompts, quality, tokens, tiers=make_settings().tiers)
    return root / "bundle", prompts


def points(bundle: Path) -> Mapping[str, Any]:
    thresholds = json.loads((bundle / "thresholds.json").read_text(encoding="utf-8"))
    result: Mapping[str, Any] = thresholds["cascade"]["value"]["operating_points"]
    return result


def provider() -> ScriptedProvider:
    """Enough answers for a few Cascades on each tier, and passing verdicts."""
    return ScriptedProvider(
        answers={model: [Reply.answer("Paris")] * 4 for model in (CHEAP, MID, TOP)},
        judges={model: [Reply.verdict(True)] * 4 for model in (MID, TOP)},
    )


async def test_a_request_picks_its_operating_point(bundle: tuple[Path, list[str]]) -> None:
    """Each point's price of a correct answer decides the start: parity starts on the top
    tier, third_cost on the cheap one; the route reports the point's price."""
    path, prompts = bundle
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(path)})
    started = {}
    async with running_server(settings, provider=provider()) as s:
        for name in ("parity", "third_cost"):
            policy = pb.RoutingPolicy(operating_point=name)
            r = await s.stub.Cascade(pb.CascadeRequest(query=prompts[1], policy=policy))
            started[name] = r.route.tier.name
            assert r.route.thresholds["price_per_correct_usd"] == pytest.approx(
                points(path)[name]["price_per_correct_usd"]
            )
            assert f"(operating point {name})" in r.route.reasons[0].detail
        default = await s.stub.Cascade(pb.CascadeRequest(query=prompts[1]))
    assert started == {"parity": "expensive", "third_cost": "cheap"}
    assert default.route.tier.name == started["parity"]


async def test_an_unknown_operating_point_is_invalid_argument(
    bundle: tuple[Path, list[str]],
) -> None:
    """A name the model does not ship is INVALID_ARGUMENT naming the ones it does."""
    path, prompts = bundle
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(path)})
    async with running_server(settings, provider=provider()) as s:
        policy = pb.RoutingPolicy(operating_point="cheapest")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.stub.Cascade(pb.CascadeRequest(query=prompts[1], policy=policy))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert "'cheapest'" in details
    assert "parity, q95, third_cost" in details


async def test_an_operating_point_without_a_value_policy_is_invalid_argument() -> None:
    """A model with no value policy ships no points: naming one is INVALID_ARGUMENT."""
    async with running_server(scorer=StaticScorer((0.9, 0.05, 0.05)), provider=provider()) as s:
        policy = pb.RoutingPolicy(operating_point="parity")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="What is 2 + 2?", policy=policy))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ships no operating points" in (err.value.details() or "")


async def test_the_python_client_sends_the_operating_point(bundle: tuple[Path, list[str]]) -> None:
    """`operating_point=` of the Python client reaches the server's value policy."""
    path, prompts = bundle
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(path)})
    async with (
        running_server(settings, provider=provider()) as s,
        AsyncTierRouteClient(f"127.0.0.1:{s.port}") as client,
    ):
        r = await client.cascade(prompts[1], operating_point="third_cost")
    assert r.tier == "cheap"
