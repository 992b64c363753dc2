"""The value policy's agreement actions served: a bundle whose value model was fitted with
the agreement checks plans them through the real server's Cascade over the replay backend,
and never where the prompt asks for no comparable final answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures import add_agreement_value_model, make_records, write_dataset
from tests.helpers import make_settings, running_server
from tierroute.routing import VALUE_ACTIONS, agreement_applies
from tierroute.v1 import tierroute_pb2 as pb

# The probe's recorded model in the bundled config's `replay_models`.
PROBE_KEY = "gpt-4o-mini-2024-07-18"
AGREE = VALUE_ACTIONS.index(next(a for a in VALUE_ACTIONS if a.judge == "agree"))
# An open-ended request in the training prompts' own words (so the model knows its n-grams).
OPEN_ENDED = "Explain the capital of the river in case 12, then the colour of the animal."


@dataclass(frozen=True)
class Served:
    """A bundle with an agreement-fitted value model and the data the replay serves."""

    bundle: Path
    data: Path
    prompts: list[str]


def _with_probe(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the probe's recorded answer: the cheap tier's own."""
    cheap = dict(record["models"][record["tiers"]["cheap"]])
    cheap["canonical_model"] = PROBE_KEY
    record["models"][PROBE_KEY] = cheap
    return record


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Train a small classifier bundle, then fit a value model over VALUE_ACTIONS (the probe
    a fourth payer) on which only the `agree` action ends correct."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("value-agreement")
    records = [_with_probe(r) for r in make_records(300)]
    data = write_dataset(root / "small.jsonl.gz", records)
    bundle = root / "bundle"
    train_bundle(data, bundle, TrainOptions(folds=2, compare_none_labels=False, progress=False))
    prompts = [str(r["prompt"]) for r in records]
    n, n_actions = len(prompts), len(VALUE_ACTIONS)
    quality = np.zeros((n, n_actions))
    quality[:, AGREE] = 1.0
    # Every action bills the same tokens on every payer: only P(correct) tells them apart.
    tokens = np.zeros((n, n_actions, 4, 4))
    tokens[..., :2] = 100.0
    add_agreement_value_model(bundle, prompts, quality, tokens)
    return Served(bundle, data, prompts)


def _hops(response: pb.CascadeResponse) -> list[tuple[str, int, bool]]:
    return [(h.tier, h.role, h.speculative) for h in response.hops]


async def _cascade(served: Served, query: str) -> pb.CascadeResponse:
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(served.bundle)})
    async with running_server(settings, environ={"TIERROUTE_DATA": str(served.data)}) as s:
        response: pb.CascadeResponse = await s.stub.Cascade(pb.CascadeRequest(query=query))
    return response


async def test_a_served_plan_chooses_agreement_and_ships_the_agreed_cheap_answer(
    served: Served,
) -> None:
    """On a question with a final answer the plan is `cheap+agree`: the cheap and probe
    answers (recorded, replayed) agree, so the cheap answer ships after two calls."""
    question = served.prompts[0]
    assert agreement_applies(question)
    r = await _cascade(served, question)
    assert r.route.reasons[0].code == pb.REASON_CODE_EXPECTED_VALUE
    assert r.route.reasons[0].detail.startswith("cheap+agree:")
    assert (r.tier.name, r.judge_status) == ("cheap", pb.JUDGE_STATUS_AGREED)
    assert sorted(_hops(r)) == sorted(
        [("cheap", pb.HOP_ROLE_ANSWER, False), ("probe", pb.HOP_ROLE_PROBE, False)]
    )
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))


async def test_a_served_plan_never_chooses_agreement_for_an_open_ended_prompt(
    served: Served,
) -> None:
    """An open-ended request has no final answer to compare: however much the model favours
    agreement, the plan takes another action and no probe is called."""
    assert not agreement_applies(OPEN_ENDED)
    r = await _cascade(served, OPEN_ENDED)
    assert r.route.reasons[0].code == pb.REASON_CODE_EXPECTED_VALUE
    assert "agree" not in r.route.reasons[0].detail.split(":")[0]
    assert all(h.role != pb.HOP_ROLE_PROBE for h in r.hops)
