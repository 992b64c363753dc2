"""Fit, export and check the Cascade's expected-value model (`tierroute.model.value`).

Training data is a table: per record and per action of `tierroute.routing.plan.ACTIONS`, whether
the cascade engine's final answer was correct and the tokens its calls billed per tier
(input and output, judges and escalations included), as `tierroute calibrate` measures
them. Tokens, not dollars: the serving side prices them with the configured tiers' prices,
so the model holds no price and a price change needs no refit. The features are the router
classifier's kind: TF-IDF over word 1-2 grams of the lower-cased prompt prefix, vocabulary
chosen the same way, but MAX_FEATURES of them. On them:

- per action, a logistic regression (C = 1, unweighted: these are probabilities, not
  decisions) for P(correct);
- one multi-output ridge regression (alpha = 1) for the expected tokens per action, tier
  and kind (input, output): the mean, not a log, because expected cost is linear in
  expected tokens, so E[tokens] priced is E[cost] under any ladder.

All of them are linear in the same features, so they are stacked into one multi-output
`LinearRegression` after the vectorizer, which skl2onnx exports as one graph. The serving
side takes the sigmoid of the first A outputs and clips the token outputs at zero.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model import ValueModel, split_outputs
from tierroute.model.bundle import POLICY_VALUE, VALUE_CALIBRATION_FILE, VALUE_FILE
from tierroute.model.classifier import PROBA_OUTPUT
from tierroute.model.operating import (
    DEFAULT_SPECULATION_COST_SHARE,
    PREDICTED_KINDS,
    CalibrationData,
    Ladder,
    PointTarget,
)
from tierroute.model.value import VALUE_OUTPUT
from tierroute.offline.training.export import adversarial_texts, to_onnx
from tierroute.offline.training.model import (
    MAX_ITER,
    RANDOM_STATE,
    build_pipeline,
    select_vocabulary,
)
from tierroute.offline.training.shared_graph import check_merged, merge_heads
from tierroute.outcomes import file_sha256
from tierroute.routing import ACTIONS, CascadeAction, classifier_text
from tierroute.settings import ProbeConfig

logger = logging.getLogger(__name__)

QUALITY_C = 1.0
COST_ALPHA = 1.0
# More 1-2 grams than the classifier's 10,000: out-of-fold log loss of the heads on dev
# fell with the vocabulary (5k 0.5411, 10k 0.5389, 20k 0.5379, 40k 0.5373; docs/EVALUATION.md).
MAX_FEATURES = 40_000
# Probabilities are clipped here when an action's training labels are all equal.
_CLIP = 1e-4
PARITY_TOLERANCE = 1e-4
# Token estimates relative to their size: float32 sums over 40,000 features reach ~1e-4 of a
# token mean where its intercept and terms cancel (9.2e-5 on dev, for the dense and the
# shared feature graph alike), which left 1e-4 no margin. 1e-3 moves a priced cost by 0.1 %;
# plan changes are counted beside it (0 on dev).
TOKEN_PARITY_TOLERANCE = 1e-3
SHARED_DOC = (
    "tierroute cascade value model sharing the router classifier's feature pass: "
    "per-tier probabilities and per-action logits and log costs"
)
OUTPUTS_DOC = (
    "value.onnx maps the classifier's text to A + 2 x A x T numbers (A actions, T tiers): "
    "the logits of P(the Cascade's final answer is correct) per action, then the expected "
    "input and output tokens its calls bill per action and tier (action-major, then tier, "
    "then input/output; judges and escalations included), priced at load time"
)


def hyperparameters() -> dict[str, Any]:
    """The value model's settings, as recorded in the thresholds file."""
    return {
        "features": "TF-IDF as the router classifier's (word 1-2 grams, sublinear tf), "
        f"{MAX_FEATURES:,} features",
        "quality": f"logistic regression per action, C={QUALITY_C}, unweighted, lbfgs",
        "tokens": f"ridge regression of expected tokens per action, tier and kind (input, "
        f"output), alpha={COST_ALPHA}",
    }


def fit_value_pipeline(
    texts: Sequence[str],
    quality: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    *,
    quality_c: float = QUALITY_C,
    max_features: int = MAX_FEATURES,
) -> Pipeline:
    """TF-IDF plus one linear layer of A + 2 x A x T outputs, from per-action quality and
    tokens.

    `texts` are already featurised (`classifier_text`); `quality` is 0/1 of shape
    (len(texts), A) and `tokens` is (len(texts), A, T, 2): input and output tokens billed
    per action and tier.
    """
    n_actions = quality.shape[1]
    if (
        quality.shape[0] != len(texts)
        or tokens.ndim != 4
        or tokens.shape[:2] != quality.shape
        or tokens.shape[3] != PREDICTED_KINDS
    ):
        raise ConfigError(
            f"value training shapes disagree: {len(texts)} texts, quality {quality.shape}, "
            f"tokens {tokens.shape} (expected (rows, actions, tiers, {PREDICTED_KINDS}))"
        )
    if not np.all(tokens >= 0):
        raise ConfigError("value training token counts must not be negative")
    tfidf = build_pipeline(select_vocabulary(texts, max_features)).named_steps["tfidf"]
    features = tfidf.fit_transform(list(texts))
    n_tokens = int(np.prod(tokens.shape[1:]))
    weights = np.zeros((n_actions + n_tokens, features.shape[1]))
    bias = np.zeros(n_actions + n_tokens)
    for a in range(n_actions):
        labels = quality[:, a].astype(np.int64)
        if labels.min() == labels.max():
            # One class only: a constant probability, clipped away from 0 and 1.
            p = float(np.clip(labels[0], _CLIP, 1 - _CLIP))
            bias[a] = np.log(p / (1 - p))
        else:
            model = LogisticRegression(C=quality_c, max_iter=MAX_ITER, random_state=RANDOM_STATE)
            model.fit(features, labels)
            weights[a], bias[a] = model.coef_[0], model.intercept_[0]
    ridge = Ridge(alpha=COST_ALPHA)
    ridge.fit(features, tokens.reshape(len(texts), n_tokens))
    weights[n_actions:], bias[n_actions:] = ridge.coef_, ridge.intercept_
    linear = LinearRegression()
    linear.coef_ = weights
    linear.intercept_ = bias
    linear.n_features_in_ = features.shape[1]
    return Pipeline([("tfidf", tfidf), ("linear", linear)])


def predict(
    pipeline: Pipeline, texts: Sequence[str], n_tiers: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """scikit-learn's (P(correct) (N, A), tokens (N, A, T, 2)) for featurised texts."""
    raw = pipeline.predict(list(texts))
    n_actions = raw.shape[1] // (1 + n_tiers * PREDICTED_KINDS)
    p, tokens = split_outputs(raw, n_actions, n_tiers)
    return np.asarray(p, dtype=np.float64), np.asarray(tokens, dtype=np.float64)


def export(pipeline: Pipeline) -> bytes:
    """The pipeline as deterministic ONNX bytes."""
    return to_onnx(
        pipeline,
        output=VALUE_OUTPUT,
        doc="tierroute cascade value model: tf-idf + linear layer, per-action logits and "
        "expected tokens per tier",
    )


@dataclass(frozen=True)
class ValueParity:
    """How far onnxruntime's estimates are from scikit-learn's."""

    rows: int
    max_abs_diff_p: float
    max_rel_diff_tokens: float
    plan_changes: int

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        return {
            "rows": self.rows,
            "max_abs_diff_p_correct": float(f"{self.max_abs_diff_p:.3g}"),
            "max_rel_diff_tokens": float(f"{self.max_rel_diff_tokens:.3g}"),
            "plan_changes": self.plan_changes,
            "tolerance": PARITY_TOLERANCE,
            "token_tolerance": TOKEN_PARITY_TOLERANCE,
        }


def check_parity(
    pipeline: Pipeline,
    model_bytes: bytes,
    texts: Sequence[str],
    *,
    prefix_chars: int,
    ladder: Ladder,
    price_per_correct_usd: float,
    actions: Sequence[CascadeAction] = ACTIONS,
) -> ValueParity:
    """Compare the serving path (`ValueModel.estimate_tokens`) with scikit-learn on raw
    texts and adversarial ones, plans priced with `ladder`; ModelLoadError when they drift.
    """
    from tierroute.model import create_session

    n_tiers = len(ladder.input_usd_per_mtok)
    served = ValueModel(
        create_session(model_bytes),
        actions=actions,
        ladder=ladder,
        points={"check": price_per_correct_usd},
        default_point="check",
        prefix_chars=prefix_chars,
    )
    cases = [*texts, *adversarial_texts()]
    expected_p, expected_t = predict(
        pipeline, [classifier_text(t, prefix_chars) for t in cases], n_tiers
    )
    got = [served.estimate_tokens(t) for t in cases]
    actual_p = np.array([g[0] for g in got])
    actual_t = np.array([g[1] for g in got])
    diff_p = float(np.abs(actual_p - expected_p).max())
    # Tokens are counts in the hundreds: relative to the count, or absolute below one.
    diff_t = float((np.abs(actual_t - expected_t) / np.maximum(np.abs(expected_t), 1.0)).max())
    value_expected = ladder.price(expected_t) - price_per_correct_usd * expected_p
    value_actual = ladder.price(actual_t) - price_per_correct_usd * actual_p
    changes = int((value_expected.argmin(axis=1) != value_actual.argmin(axis=1)).sum())
    report = ValueParity(len(cases), diff_p, diff_t, changes)
    logger.info(
        "value model parity: %s texts, max |dp| %.3g, max relative token diff %.3g, "
        "%s plan changes",
        len(cases),
        diff_p,
        diff_t,
        changes,
    )
    if not (diff_p < PARITY_TOLERANCE and diff_t < TOKEN_PARITY_TOLERANCE):
        raise ModelLoadError(
            f"value model ONNX export disagrees with scikit-learn: max |dp| {diff_p:.3g}, "
            f"max relative token difference {diff_t:.3g} (tolerances {PARITY_TOLERANCE:g} and "
            f"{TOKEN_PARITY_TOLERANCE:g})"
        )
    return report


def prepare_value_model(
    pipeline: Pipeline,
    *,
    ladder: Ladder,
    points: Mapping[str, Mapping[str, Any]],
    default_point: str,
    prefix_chars: int,
    parity_texts: Sequence[str] = (),
    actions: Sequence[CascadeAction] = ACTIONS,
    classifier_model: bytes | None = None,
    probe: ProbeConfig | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Export `pipeline`, check parity, and return the ONNX bytes with the thresholds file's
    `cascade.value` section naming them (set `cascade.policy` to `value` to use it).

    With `probe` (the agreement actions' probe), the model's tokens and `ladder` have it
    as one more payer after the tiers, and the section names it (`probe`).

    `points` are the operating points (name -> {"target", "price_per_correct_usd", ...})
    solved under `ladder`, the prices the section records as the calibration's; the
    section names `calibration_data` (`write_calibration_data`) for solving them again.
    With `classifier_model` (the bundle's model.onnx), the value graph also carries the
    classifier's head over one shared feature pass (`shared_graph`), checked against both.
    """
    data = export(pipeline)
    default_price = float(points[default_point]["price_per_correct_usd"])
    shared = None
    if classifier_model is not None:
        heads = {PROBA_OUTPUT: classifier_model, VALUE_OUTPUT: data}
        data = merge_heads(heads, doc=SHARED_DOC)
        merge_texts = [*parity_texts, *adversarial_texts()]
        shared = check_merged(
            data, heads, merge_texts, prefix_chars=prefix_chars, relative=(VALUE_OUTPUT,)
        )
    parity = check_parity(
        pipeline,
        data,
        parity_texts,
        prefix_chars=prefix_chars,
        ladder=ladder,
        price_per_correct_usd=default_price,
        actions=actions,
    )
    section = {
        "model": VALUE_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "actions": [a.as_dict() for a in actions],
        "prices": ladder.as_dict(),
        **({} if probe is None else {"probe": probe_entry(probe)}),
        "default_operating_point": default_point,
        "price_per_correct_usd": default_price,
        "operating_points": {name: dict(entry) for name, entry in points.items()},
        "prefix_chars": prefix_chars,
        "outputs": OUTPUTS_DOC,
        "hyperparameters": hyperparameters(),
        "parity": parity.as_dict(),
    }
    if shared is not None:
        section["shared_features"] = {
            "classifier": "model.onnx's head, one tokenization and TF-IDF pass for both",
            "parity_with_own_graphs": shared.as_dict(),
        }
    return data, section


def probe_entry(probe: ProbeConfig) -> dict[str, Any]:
    """The value section's `probe`: who played it in calibration and at what price (the
    last row of `prices`)."""
    return {
        "name": probe.label,
        "replay_models": list(probe.replay_models),
        "prices": "the last row of cascade.value.prices: its tokens are the last payer",
        "applies": "only to prompts that ask for a comparable final answer "
        "(tierroute.routing.agreement_applies); elsewhere the agreement actions are "
        "never chosen",
    }


def write_calibration_data(model_dir: Path, data: CalibrationData) -> dict[str, Any]:
    """Write `value_calibration.npz` atomically; the `calibration_data` entry naming it."""
    path = model_dir / VALUE_CALIBRATION_FILE
    partial = path.with_suffix(".npz.partial")
    data.save(partial)
    partial.replace(path)
    return {
        "file": VALUE_CALIBRATION_FILE,
        "sha256": file_sha256(path),
        "rows": len(data.oof_p),
        "arrays": "oof_p (rows, actions): out-of-fold P(correct); oof_tokens (rows, actions, "
        "tiers, 2): out-of-fold expected input/output tokens; quality (rows, actions): the "
        "action's realised correctness; tokens (rows, actions, tiers, 4): its realised "
        "input, output, cache-write and cache-read tokens (tiers: the payers, the probe "
        "last when the model has one); allowed (rows, actions), when present: the actions "
        "the record may take",
    }


def write_model_file(model_dir: Path, data: bytes) -> Path:
    """Write the value model into `model_dir` atomically (rename over the old one)."""
    path = model_dir / VALUE_FILE
    partial = path.with_suffix(".onnx.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def stored(evidence: CalibrationData) -> CalibrationData:
    """`evidence` as the bundle stores and a server reads it back (float32 estimates,
    integer tokens), so prices solved on it are exactly what a server re-solves."""
    return CalibrationData(
        oof_p=evidence.oof_p.astype(np.float32).astype(np.float64),
        oof_tokens=evidence.oof_tokens.astype(np.float32).astype(np.float64),
        quality=evidence.quality.astype(np.int8).astype(np.float64),
        tokens=np.rint(evidence.tokens),
        top_action=evidence.top_action,
        allowed=evidence.allowed,
        plain_actions=evidence.plain_actions,
    )


def solve_points(
    evidence: CalibrationData,
    ladder: Ladder,
    targets: Mapping[str, PointTarget],
    share: float = DEFAULT_SPECULATION_COST_SHARE,
) -> dict[str, dict[str, Any]]:
    """Every operating point's entry for the thresholds file: its target and its price
    (with in-sample figures) under `ladder`, solved on the stored form of `evidence`."""
    solved = stored(evidence).solve(ladder, targets, share)
    return {
        name: {
            "target": {**target.as_dict(), "statement": target.statement()},
            **solved[name].as_dict(),
        }
        for name, target in targets.items()
    }


def write_value_model(
    model_dir: Path,
    pipeline: Pipeline,
    evidence: CalibrationData,
    *,
    ladder: Ladder,
    points: Mapping[str, Mapping[str, Any]],
    default_point: str,
    prefix_chars: int,
    parity_texts: Sequence[str] = (),
    share: float = DEFAULT_SPECULATION_COST_SHARE,
    actions: Sequence[CascadeAction] = ACTIONS,
    classifier_model: bytes | None = None,
    probe: ProbeConfig | None = None,
) -> dict[str, Any]:
    """Export and check `pipeline`, write value.onnx and value_calibration.npz into
    `model_dir`, and return the `cascade.value` section naming both (`points` as
    `solve_points` makes them, figures added as wished)."""
    data, section = prepare_value_model(
        pipeline,
        ladder=ladder,
        points=points,
        default_point=default_point,
        prefix_chars=prefix_chars,
        parity_texts=parity_texts,
        actions=actions,
        classifier_model=classifier_model,
        probe=probe,
    )
    write_model_file(model_dir, data)
    section["calibration_data"] = write_calibration_data(model_dir, evidence)
    section["speculation_cost_share"] = share
    return section


__all__ = [
    "POLICY_VALUE",
    "ValueParity",
    "check_parity",
    "export",
    "fit_value_pipeline",
    "predict",
    "prepare_value_model",
    "probe_entry",
    "solve_points",
    "stored",
    "write_calibration_data",
    "write_model_file",
    "write_value_model",
]
