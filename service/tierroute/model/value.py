"""The Cascade's expected-value policy: where to start, and whether to judge, per query.

The risk thresholds answer "which tier is likely enough to be right?". A Cascade has more
choices than a tier: it can start on the cheap tier and have the answer judged, start there
unjudged, judge only the first answer, start on the middle tier with or without a judge, or
go straight to the top. `tierroute calibrate` runs every record of the data under each of
these ACTIONS with the cascade engine, and fits, on the prompt's TF-IDF features:

- per action, a logistic regression for P(the cascade's final answer is correct);
- per action, a ridge regression for the logarithm of its cost in USD, judges included.

Both are linear in the same features, so one ONNX graph (TF-IDF, then a linear layer with
2 x len(ACTIONS) outputs) computes them: the first half are logits, the second half log
costs. The policy picks the action with the lowest `cost - price * P(correct)`, where the
price of a correct answer is what calibration searched toward its stated target (a
quality floor or a cost budget). A higher price buys quality; a lower one saves money.

The model is optional: a bundle without it, or a request the policy does not cover (a
quality floor, the published rule), starts on the risk thresholds as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import ModelLoadError
from tierroute.model.bundle import POLICY_VALUE, VALUE_FILE
from tierroute.outcomes import file_sha256
from tierroute.routing import (
    ACTIONS,
    JUDGE_PLANS,
    CascadeAction,
    CascadePlan,
    JudgePlan,
    choose,
    classifier_text,
    plan_from,
)

VALUE_INPUT = "text"
VALUE_OUTPUT = "variable"
# A value graph that shares its feature pass with the classifier (offline.training.
# shared_graph) also outputs the classifier's per-tier probabilities under this name.
SHARED_PROBA_OUTPUT = "probabilities"


def split_outputs(raw: Any, n_actions: int) -> tuple[Any, Any]:
    """The model's raw rows as (P(correct), cost USD) arrays: sigmoid and exp of the halves."""
    values = np.asarray(raw, dtype=np.float64)
    logits, log_cost = values[..., :n_actions], values[..., n_actions:]
    return 1.0 / (1.0 + np.exp(-logits)), np.exp(log_cost)


def parse_actions(raw: Any, n_tiers: int, where: str) -> tuple[CascadeAction, ...]:
    """The `actions` list of a thresholds file's value section, validated."""
    if not isinstance(raw, list) or not raw:
        raise ModelLoadError(f"{where}: 'actions' must be a non-empty list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise ModelLoadError(f"{where}: every action must be an object")
        start, judge = item.get("start"), item.get("judge")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n_tiers:
            raise ModelLoadError(f"{where}: action start {start!r} is not a tier index")
        if judge not in JUDGE_PLANS:
            raise ModelLoadError(f"{where}: action judge {judge!r} is not one of {JUDGE_PLANS}")
        out.append(CascadeAction(start, judge))
    return tuple(out)


class ValueModel:
    """A loaded expected-value model: per-action estimates and the plan for a query."""

    def __init__(
        self,
        session: Any,
        *,
        actions: Sequence[CascadeAction],
        price_per_correct_usd: float,
        prefix_chars: int,
    ) -> None:
        self._session = session
        self.actions = tuple(actions)
        self.price_per_correct_usd = price_per_correct_usd
        self.prefix_chars = prefix_chars
        # One run gives the classifier's probabilities too (one tokenization, one TF-IDF).
        self.shared = SHARED_PROBA_OUTPUT in {o.name for o in session.get_outputs()}

    @classmethod
    def load(
        cls,
        model_dir: Path,
        section: Mapping[str, Any],
        *,
        n_tiers: int,
        prefix_chars: int,
        where: str,
    ) -> ValueModel:
        """Load the model a thresholds file's `cascade.value` section names; ModelLoadError
        naming the file at fault when anything is missing, corrupt or inconsistent.
        """
        from tierroute.model.onnx_session import ORT_LOAD_ERRORS, create_session

        name = section.get("model", VALUE_FILE)
        if name != VALUE_FILE:
            # The registry copies bundles by file name: the value model has one fixed name.
            raise ModelLoadError(f"{where}: cascade.value.model must be {VALUE_FILE!r}")
        actions = parse_actions(section.get("actions"), n_tiers, f"{where}: cascade.value")
        price = section.get("price_per_correct_usd")
        if isinstance(price, bool) or not isinstance(price, int | float) or not price >= 0:
            raise ModelLoadError(
                f"{where}: cascade.value.price_per_correct_usd must be a number >= 0"
            )
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"value model file not found: {path} (named by {where})")
        expected = section.get("sha256")
        actual = file_sha256(path)
        if actual != expected:
            raise ModelLoadError(
                f"{path}: SHA-256 {actual} does not match {expected!r} recorded in {where}"
            )
        try:
            session = create_session(path.read_bytes())
        except ORT_LOAD_ERRORS as exc:
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = {o.name: o.shape for o in session.get_outputs()}
        if inputs != [VALUE_INPUT] or VALUE_OUTPUT not in outputs:
            raise ModelLoadError(
                f"{path}: expected input {VALUE_INPUT!r} and output {VALUE_OUTPUT!r}, "
                f"found {inputs} -> {sorted(outputs)}"
            )
        shape = outputs[VALUE_OUTPUT]
        width = shape[-1] if isinstance(shape, list) and len(shape) == 2 else None
        if width != 2 * len(actions):
            # A symbolic or wrong width would fail every Cascade later: refuse it now.
            raise ModelLoadError(
                f"{path}: output {VALUE_OUTPUT!r} has shape {shape}, but {where} lists "
                f"{len(actions)} actions: expected [batch, {2 * len(actions)}]"
            )
        return cls(
            session, actions=actions, price_per_correct_usd=float(price), prefix_chars=prefix_chars
        )

    def estimate(self, text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per action: P(the Cascade ends correct) and its expected cost in USD."""
        feed = {VALUE_INPUT: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        (raw,) = self._session.run([VALUE_OUTPUT], feed)
        p, cost = split_outputs(raw[0], len(self.actions))
        return tuple(float(v) for v in p), tuple(float(v) for v in cost)

    def plan(self, text: str) -> CascadePlan:
        """The action with the best expected value for `text`."""
        p, cost = self.estimate(text)
        return plan_from(p, cost, self.price_per_correct_usd, self.actions)

    def scores_and_plan(self, text: str) -> tuple[list[float], CascadePlan]:
        """The classifier's probabilities and the plan from one run of a shared graph."""
        feed = {VALUE_INPUT: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        probs, raw = self._session.run([SHARED_PROBA_OUTPUT, VALUE_OUTPUT], feed)
        p, cost = split_outputs(raw[0], len(self.actions))
        plan = plan_from(
            tuple(float(v) for v in p),
            tuple(float(v) for v in cost),
            self.price_per_correct_usd,
            self.actions,
        )
        scores: list[float] = probs[0].tolist()
        return scores, plan


__all__ = [
    "ACTIONS",
    "JUDGE_PLANS",
    "POLICY_VALUE",
    "VALUE_FILE",
    "CascadeAction",
    "CascadePlan",
    "JudgePlan",
    "ValueModel",
    "choose",
    "parse_actions",
    "plan_from",
    "split_outputs",
]
