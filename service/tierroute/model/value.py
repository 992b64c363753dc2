"""The Cascade's expected-value policy: where to start, and whether to judge, per query.

The risk thresholds answer "which tier is likely enough to be right?". A Cascade has more
choices than a tier: it can start on the cheap tier and have the answer judged, start there
unjudged, judge only the first answer, start on the middle tier with or without a judge, or
go straight to the top. `tierroute calibrate` runs every record of the data under each of
these ACTIONS with the cascade engine, and fits, on the prompt's TF-IDF features:

- per action, a logistic regression for P(the cascade's final answer is correct);
- per action and per tier, a ridge regression for the expected input and output tokens
  of every call the action makes on that tier (answers, judges and escalations).

All are linear in the same features, so one ONNX graph (TF-IDF, then a linear layer with
A + 2 x A x T outputs for A actions and T tiers) computes them: first the logits, then the
tokens, action-major, tier, then (input, output). Tokens are priced here, at load time,
with the configured tiers' prices (`tierroute.model.operating.Ladder`): a tier's price is
configuration, and it reaches every decision. The policy picks the action with the lowest
`cost - price * P(correct)`, where the price of a correct answer is the requested operating
point's (`parity`, `q95`, `third_cost`; the bundle names its default). When the configured
prices differ from the ones the bundle was calibrated under, the operating points are
solved again for the configured ladder from the out-of-fold estimates the bundle stores
(`value_calibration.npz`), with no refitting.

The model is optional: a bundle without it, or a request the policy does not cover (a
quality floor, the published rule), starts on the risk thresholds as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import InvalidRequest, ModelLoadError
from tierroute.model.bundle import POLICY_VALUE, VALUE_CALIBRATION_FILE, VALUE_FILE
from tierroute.model.operating import (
    DEFAULT_SPECULATION_COST_SHARE,
    PREDICTED_KINDS,
    CalibrationData,
    Ladder,
    parse_points,
)
from tierroute.outcomes import file_sha256
from tierroute.routing import (
    ACTIONS,
    JUDGE_PLANS,
    CascadeAction,
    CascadePlan,
    JudgePlan,
    Scored,
    allowed_actions,
    choose,
    classifier_text,
    plan_from,
)

logger = logging.getLogger(__name__)

VALUE_INPUT = "text"
VALUE_OUTPUT = "variable"
# A value graph that shares its feature pass with the classifier (offline.training.
# shared_graph) also outputs the classifier's per-tier probabilities under this name.
SHARED_PROBA_OUTPUT = "probabilities"
# ... and the classifier's familiarity signal under this name (model.classifier's).
FAMILIARITY_OUTPUT = "familiarity"


def output_width(n_actions: int, n_tiers: int) -> int:
    """The value graph's outputs: a logit per action, then tokens per action, tier and kind."""
    return n_actions + n_actions * n_tiers * PREDICTED_KINDS


def split_outputs(raw: Any, n_actions: int, n_tiers: int) -> tuple[Any, Any]:
    """The model's raw rows as P(correct) (..., A) and expected tokens (..., A, T, 2):
    the sigmoid of the logits, the token regressions clipped at zero."""
    values = np.asarray(raw, dtype=np.float64)
    logits, tokens = values[..., :n_actions], values[..., n_actions:]
    shape = (*tokens.shape[:-1], n_actions, n_tiers, PREDICTED_KINDS)
    return 1.0 / (1.0 + np.exp(-logits)), np.maximum(tokens.reshape(shape), 0.0)


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


def top_action(actions: Sequence[CascadeAction], n_tiers: int) -> int:
    """The index of "the top tier, unjudged": the always-top baseline operating points are
    relative to."""
    for index, action in enumerate(actions):
        if action.start == n_tiers - 1 and action.judge == "none":
            return index
    raise ModelLoadError("the value policy's actions lack the top tier, unjudged")


def plain_actions(actions: Sequence[CascadeAction], n_tiers: int) -> tuple[int, ...]:
    """Per tier, the index of its action "this tier, unjudged" (the baselines of points
    defined against a reference tier); empty when some tier has none."""
    index = {(a.start, a.judge): i for i, a in enumerate(actions)}
    found = tuple(index.get((t, "none"), -1) for t in range(n_tiers))
    return () if -1 in found else found


def payers(section: Mapping[str, Any], n_tiers: int, where: str) -> int:
    """How many priced payers a value section's token estimates have: the tiers, and the
    agreement probe after them when the section names one (`probe`)."""
    probe = section.get("probe")
    if probe is None:
        return n_tiers
    if not isinstance(probe, Mapping) or not isinstance(probe.get("name"), str):
        raise ModelLoadError(f"{where}: cascade.value.probe must be an object with a name")
    return n_tiers + 1


def with_probe_prices(ladder: Ladder, calibrated: Ladder, n_payers: int) -> Ladder:
    """`ladder` (the configured tiers' prices) with the calibration's probe row appended
    when the model prices a probe and `ladder` lacks one."""
    if len(ladder.input_usd_per_mtok) >= n_payers:
        return ladder
    return ladder.with_probe(calibrated.input_usd_per_mtok[-1], calibrated.output_usd_per_mtok[-1])


def _number(section: Mapping[str, Any], key: str, where: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ModelLoadError(f"{where}: {key} must be a number >= 0")
    return float(value)


class ValueModel:
    """A loaded expected-value model: per-action estimates and the plan for a query."""

    def __init__(
        self,
        session: Any,
        *,
        actions: Sequence[CascadeAction],
        ladder: Ladder,
        points: Mapping[str, float],
        default_point: str,
        prefix_chars: int,
    ) -> None:
        if default_point not in points:
            raise ModelLoadError(f"default operating point {default_point!r} is not shipped")
        self._session = session
        self.actions = tuple(actions)
        self.ladder = ladder
        self.n_tiers = len(ladder.input_usd_per_mtok)
        # Operating point name -> its price of a correct answer (USD) under `ladder`.
        self.points = dict(points)
        self.default_point = default_point
        self.prefix_chars = prefix_chars
        # One run gives the classifier's probabilities too (one tokenization, one TF-IDF).
        outputs = {o.name for o in session.get_outputs()}
        self.shared = SHARED_PROBA_OUTPUT in outputs
        # The shared graph also carries the classifier's familiarity signal (model.classifier).
        self.familiar = self.shared and FAMILIARITY_OUTPUT in outputs
        self._shared_outputs = [SHARED_PROBA_OUTPUT, VALUE_OUTPUT] + (
            [FAMILIARITY_OUTPUT] if self.familiar else []
        )
        # A row's expected tokens (A x T x kinds, flat) times this is each action's cost in
        # USD under `ladder`: one product per plan instead of reshaping and pricing.
        rates = ladder.per_token()[:, :PREDICTED_KINDS].reshape(-1)
        self._cost_matrix = np.kron(np.eye(len(self.actions)), rates.reshape(-1, 1))

    @property
    def price_per_correct_usd(self) -> float:
        """The default operating point's price of a correct answer."""
        return self.points[self.default_point]

    @classmethod
    def load(
        cls,
        model_dir: Path,
        section: Mapping[str, Any],
        *,
        n_tiers: int,
        prefix_chars: int,
        where: str,
        ladder: Ladder | None = None,
    ) -> ValueModel:
        """Load the model a thresholds file's `cascade.value` section names, priced with
        `ladder` (None: the prices it was calibrated under); ModelLoadError naming the file
        at fault when anything is missing, corrupt or inconsistent.
        """
        from tierroute.model.onnx_session import ORT_LOAD_ERRORS, create_session

        name = section.get("model", VALUE_FILE)
        if name != VALUE_FILE:
            # The registry copies bundles by file name: the value model has one fixed name.
            raise ModelLoadError(f"{where}: cascade.value.model must be {VALUE_FILE!r}")
        actions = parse_actions(section.get("actions"), n_tiers, f"{where}: cascade.value")
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"value model file not found: {path} (named by {where})")
        expected = section.get("sha256")
        actual = file_sha256(path)
        if actual != expected:
            raise ModelLoadError(
                f"{path}: SHA-256 {actual} does not match {expected!r} recorded in {where}"
            )
        used, points, default = operating_prices(
            model_dir, section, n_tiers=n_tiers, where=where, ladder=ladder
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
        n_payers = payers(section, n_tiers, where)
        if width != output_width(len(actions), n_payers):
            # A symbolic or wrong width would fail every Cascade later: refuse it now.
            raise ModelLoadError(
                f"{path}: output {VALUE_OUTPUT!r} has shape {shape}, but {where} lists "
                f"{len(actions)} actions over {n_payers} priced payers: expected "
                f"[batch, {output_width(len(actions), n_payers)}]"
            )
        return cls(
            session,
            actions=actions,
            ladder=used,
            points=points,
            default_point=default,
            prefix_chars=prefix_chars,
        )

    def estimate_tokens(self, text: str) -> tuple[tuple[float, ...], Any]:
        """Per action: P(the Cascade ends correct), and expected tokens (A, T, 2)."""
        feed = {VALUE_INPUT: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        (raw,) = self._session.run([VALUE_OUTPUT], feed)
        p, tokens = split_outputs(raw[0], len(self.actions), self.n_tiers)
        return tuple(float(v) for v in p), tokens

    def scored(self, text: str, point: str | None = None) -> Scored:
        """The classifier's probabilities, the plan at operating point `point` (None: the
        default) and, when the graph outputs it (`familiar`), the familiarity signal, from
        one run of a shared graph (`shared`)."""
        price = self.price_for(point)
        feed = {VALUE_INPUT: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        out = self._session.run(self._shared_outputs, feed)
        probs, raw = out[0], out[1]
        familiarity = float(out[2].reshape(-1)[0]) if self.familiar else None
        p, cost = self._estimates(raw[0])
        scores: list[float] = probs[0].tolist()
        plan = plan_from(
            p,
            cost,
            price,
            self.actions,
            point or self.default_point,
            allowed=allowed_actions(self.actions, text),
        )
        return Scored(scores, familiarity, plan)

    def _estimates(self, raw: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """One row of the model's output as P(correct) and cost in USD per action (what
        `split_outputs` and `Ladder.price` give, for one row at a time)."""
        n = len(self.actions)
        values = np.asarray(raw, dtype=np.float64)
        p = 1.0 / (1.0 + np.exp(-values[:n]))
        cost = np.maximum(values[n:], 0.0) @ self._cost_matrix
        return tuple(p.tolist()), tuple(cost.tolist())

    def estimate(self, text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per action: P(the Cascade ends correct) and its expected cost in USD under the
        configured prices."""
        feed = {VALUE_INPUT: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        (raw,) = self._session.run([VALUE_OUTPUT], feed)
        return self._estimates(raw[0])

    def price_for(self, point: str | None) -> float:
        """An operating point's price of a correct answer (None or "": the default);
        InvalidRequest naming the known points for any other name."""
        if not point:
            return self.price_per_correct_usd
        try:
            return self.points[point]
        except KeyError:
            raise InvalidRequest(
                f"policy.operating_point {point!r} is not one of this model's operating "
                f"points: {', '.join(self.points)}"
            ) from None

    def plan(self, text: str, point: str | None = None) -> CascadePlan:
        """The action with the best expected value for `text` at operating point `point`."""
        price = self.price_for(point)
        p, cost = self.estimate(text)
        return plan_from(
            p,
            cost,
            price,
            self.actions,
            point or self.default_point,
            allowed=allowed_actions(self.actions, text),
        )


def operating_prices(
    model_dir: Path,
    section: Mapping[str, Any],
    *,
    n_tiers: int,
    where: str,
    ladder: Ladder | None = None,
) -> tuple[Ladder, dict[str, float], str]:
    """The ladder in use, every operating point's price of a correct answer under it, and
    the default point's name: as stored when `ladder` is the calibration's (or None), else
    solved again from the stored calibration data. Needs no onnxruntime.

    A model that prices an agreement probe (`cascade.value.probe`) has one more payer
    after the tiers; a `ladder` of the tiers alone gets the calibration's probe prices."""
    actions = parse_actions(section.get("actions"), n_tiers, f"{where}: cascade.value")
    n_payers = payers(section, n_tiers, where)
    calibrated = Ladder.from_dict(section.get("prices"), n_payers, f"{where}: cascade.value")
    points, default = _stored_points(section, where)
    data = _calibration_data(model_dir, section, actions, n_tiers, where)
    used = calibrated if ladder is None else with_probe_prices(ladder, calibrated, n_payers)
    if used != calibrated:
        share = section.get("speculation_cost_share", DEFAULT_SPECULATION_COST_SHARE)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ModelLoadError(f"{where}: cascade.value.speculation_cost_share must be in [0, 1]")
        targets = parse_points(section.get("operating_points"), f"{where}: cascade.value")
        solved = data.solve(used, targets, float(share))
        points = {n: s.price_per_correct_usd for n, s in solved.items()}
        logger.info(
            "value policy: configured prices differ from calibration's; operating points "
            "re-solved on %s stored rows: %s",
            len(data.oof_p),
            ", ".join(f"{n} ${p:.3g}" for n, p in points.items()),
        )
    return used, points, default


def _stored_points(section: Mapping[str, Any], where: str) -> tuple[dict[str, float], str]:
    """The operating points' stored prices and the default's name."""
    raw = section.get("operating_points")
    parse_points(raw, f"{where}: cascade.value")
    assert isinstance(raw, Mapping)  # parse_points refused anything else
    points = {
        str(n): _number(entry, "price_per_correct_usd", f"{where}: cascade.value.{n}")
        for n, entry in raw.items()
    }
    default = section.get("default_operating_point")
    if default not in points:
        raise ModelLoadError(
            f"{where}: cascade.value.default_operating_point {default!r} is not one of "
            f"{sorted(points)}"
        )
    return points, str(default)


def _calibration_data(
    model_dir: Path,
    section: Mapping[str, Any],
    actions: Sequence[CascadeAction],
    n_tiers: int,
    where: str,
) -> CalibrationData:
    """The stored calibration evidence, checked against its recorded hash and shapes."""
    entry = section.get("calibration_data")
    if not isinstance(entry, Mapping) or entry.get("file") != VALUE_CALIBRATION_FILE:
        raise ModelLoadError(
            f"{where}: cascade.value.calibration_data must name {VALUE_CALIBRATION_FILE!r}"
        )
    path = model_dir / VALUE_CALIBRATION_FILE
    if not path.is_file():
        raise ModelLoadError(f"value calibration file not found: {path} (named by {where})")
    actual = file_sha256(path)
    if actual != entry.get("sha256"):
        raise ModelLoadError(
            f"{path}: SHA-256 {actual} does not match {entry.get('sha256')!r} recorded in {where}"
        )
    return CalibrationData.load(
        path,
        n_actions=len(actions),
        n_tiers=payers(section, n_tiers, where),
        top_action=top_action(actions, n_tiers),
        plain_actions=plain_actions(actions, n_tiers),
    )


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
    "operating_prices",
    "output_width",
    "parse_actions",
    "payers",
    "plain_actions",
    "plan_from",
    "split_outputs",
    "top_action",
    "with_probe_prices",
]
