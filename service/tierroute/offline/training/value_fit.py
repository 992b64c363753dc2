"""Fit, export and check the Cascade's expected-value model (`tierroute.model.value`).

Training data is a table: per record and per action of `tierroute.routing.plan.ACTIONS`, whether
the cascade engine's final answer was correct and what it cost (judges included), as
`tierroute calibrate` measures them. The features are the router classifier's kind: TF-IDF
over word 1-2 grams of the lower-cased prompt prefix, vocabulary chosen the same way, but
MAX_FEATURES of them. On them:

- per action, a logistic regression (C = 1, unweighted: these are probabilities, not
  decisions) for P(correct);
- per action, a ridge regression (alpha = 1) for log(cost in USD).

All of them are linear in the same features, so they are stacked into one multi-output
`LinearRegression` after the vectorizer, which skl2onnx exports as one graph. The serving
side takes the sigmoid of the first half and the exponential of the second.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model import ValueModel, split_outputs
from tierroute.model.bundle import POLICY_VALUE, VALUE_FILE
from tierroute.model.classifier import PROBA_OUTPUT
from tierroute.model.value import VALUE_OUTPUT
from tierroute.offline.training.export import adversarial_texts, to_onnx
from tierroute.offline.training.model import (
    MAX_ITER,
    RANDOM_STATE,
    build_pipeline,
    select_vocabulary,
)
from tierroute.offline.training.shared_graph import check_merged, merge_heads
from tierroute.routing import ACTIONS, CascadeAction, classifier_text

logger = logging.getLogger(__name__)

QUALITY_C = 1.0
COST_ALPHA = 1.0
# More 1-2 grams than the classifier's 10,000: out-of-fold log loss of the heads on dev
# fell with the vocabulary (5k 0.5411, 10k 0.5389, 20k 0.5379, 40k 0.5373; docs/EVALUATION.md).
MAX_FEATURES = 40_000
# Probabilities are clipped here when an action's training labels are all equal.
_CLIP = 1e-4
PARITY_TOLERANCE = 1e-4
SHARED_DOC = (
    "tierroute cascade value model sharing the router classifier's feature pass: "
    "per-tier probabilities and per-action logits and log costs"
)
OUTPUTS_DOC = (
    "value.onnx maps the classifier's text to 2 x len(actions) numbers: the logits of "
    "P(the Cascade's final answer is correct) per action, then the natural log of its "
    "expected cost in USD (calibration prices, judges included) per action"
)


def hyperparameters() -> dict[str, Any]:
    """The value model's settings, as recorded in the thresholds file."""
    return {
        "features": "TF-IDF as the router classifier's (word 1-2 grams, sublinear tf), "
        f"{MAX_FEATURES:,} features",
        "quality": f"logistic regression per action, C={QUALITY_C}, unweighted, lbfgs",
        "cost": f"ridge regression of log(cost USD) per action, alpha={COST_ALPHA}",
    }


def fit_value_pipeline(
    texts: Sequence[str],
    quality: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    *,
    quality_c: float = QUALITY_C,
    max_features: int = MAX_FEATURES,
) -> Pipeline:
    """TF-IDF plus one linear layer of 2 x A outputs, from per-action quality and cost.

    `texts` are already featurised (`classifier_text`); `quality` is 0/1 and `cost` is
    positive, both of shape (len(texts), A).
    """
    n_actions = quality.shape[1]
    if quality.shape != cost.shape or quality.shape[0] != len(texts):
        raise ConfigError(
            f"value training shapes disagree: {len(texts)} texts, quality {quality.shape}, "
            f"cost {cost.shape}"
        )
    if not np.all(cost > 0):
        raise ConfigError("value training costs must be positive (a log is fitted)")
    tfidf = build_pipeline(select_vocabulary(texts, max_features)).named_steps["tfidf"]
    features = tfidf.fit_transform(list(texts))
    weights = np.zeros((2 * n_actions, features.shape[1]))
    bias = np.zeros(2 * n_actions)
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
        ridge.fit(features, np.log(cost[:, a]))
        weights[n_actions + a], bias[n_actions + a] = ridge.coef_, ridge.intercept_
    linear = LinearRegression()
    linear.coef_ = weights
    linear.intercept_ = bias
    linear.n_features_in_ = features.shape[1]
    return Pipeline([("tfidf", tfidf), ("linear", linear)])


def predict(
    pipeline: Pipeline, texts: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """scikit-learn's (P(correct), cost) for already featurised texts."""
    raw = pipeline.predict(list(texts))
    n_actions = raw.shape[1] // 2
    p, c = split_outputs(raw, n_actions)
    return np.asarray(p, dtype=np.float64), np.asarray(c, dtype=np.float64)


def export(pipeline: Pipeline) -> bytes:
    """The pipeline as deterministic ONNX bytes."""
    return to_onnx(
        pipeline,
        output=VALUE_OUTPUT,
        doc="tierroute cascade value model: tf-idf + linear layer, per-action logits and log costs",
    )


@dataclass(frozen=True)
class ValueParity:
    """How far onnxruntime's estimates are from scikit-learn's."""

    rows: int
    max_abs_diff_p: float
    max_rel_diff_cost: float
    plan_changes: int

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        return {
            "rows": self.rows,
            "max_abs_diff_p_correct": float(f"{self.max_abs_diff_p:.3g}"),
            "max_rel_diff_cost": float(f"{self.max_rel_diff_cost:.3g}"),
            "plan_changes": self.plan_changes,
            "tolerance": PARITY_TOLERANCE,
        }


def check_parity(
    pipeline: Pipeline,
    model_bytes: bytes,
    texts: Sequence[str],
    *,
    prefix_chars: int,
    price_per_correct_usd: float,
    actions: Sequence[CascadeAction] = ACTIONS,
) -> ValueParity:
    """Compare the serving path (`ValueModel.estimate`) with scikit-learn on raw texts and
    adversarial ones; ModelLoadError when they drift apart.
    """
    from tierroute.model import create_session

    served = ValueModel(
        create_session(model_bytes),
        actions=actions,
        price_per_correct_usd=price_per_correct_usd,
        prefix_chars=prefix_chars,
    )
    cases = [*texts, *adversarial_texts()]
    expected_p, expected_c = predict(pipeline, [classifier_text(t, prefix_chars) for t in cases])
    got = [served.estimate(t) for t in cases]
    actual_p = np.array([g[0] for g in got])
    actual_c = np.array([g[1] for g in got])
    diff_p = float(np.abs(actual_p - expected_p).max())
    diff_c = float((np.abs(actual_c - expected_c) / expected_c).max())
    value_expected = expected_c - price_per_correct_usd * expected_p
    value_actual = actual_c - price_per_correct_usd * actual_p
    changes = int((value_expected.argmin(axis=1) != value_actual.argmin(axis=1)).sum())
    report = ValueParity(len(cases), diff_p, diff_c, changes)
    logger.info(
        "value model parity: %s texts, max |dp| %.3g, max relative cost diff %.3g, %s plan changes",
        len(cases),
        diff_p,
        diff_c,
        changes,
    )
    if not (diff_p < PARITY_TOLERANCE and diff_c < PARITY_TOLERANCE):
        raise ModelLoadError(
            f"value model ONNX export disagrees with scikit-learn: max |dp| {diff_p:.3g}, "
            f"max relative cost difference {diff_c:.3g} (tolerance {PARITY_TOLERANCE:g})"
        )
    return report


def prepare_value_model(
    pipeline: Pipeline,
    *,
    price_per_correct_usd: float,
    prefix_chars: int,
    parity_texts: Sequence[str] = (),
    actions: Sequence[CascadeAction] = ACTIONS,
    classifier_model: bytes | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Export `pipeline`, check parity, and return the ONNX bytes with the thresholds file's
    `cascade.value` section naming them (set `cascade.policy` to `value` to use it).

    With `classifier_model` (the bundle's model.onnx), the value graph also carries the
    classifier's head over one shared feature pass (`shared_graph`), checked against both.
    """
    data = export(pipeline)
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
        price_per_correct_usd=price_per_correct_usd,
        actions=actions,
    )
    section = {
        "model": VALUE_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "actions": [a.as_dict() for a in actions],
        "price_per_correct_usd": price_per_correct_usd,
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


def write_model_file(model_dir: Path, data: bytes) -> Path:
    """Write the value model into `model_dir` atomically (rename over the old one)."""
    path = model_dir / VALUE_FILE
    partial = path.with_suffix(".onnx.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def write_value_model(
    model_dir: Path,
    pipeline: Pipeline,
    *,
    price_per_correct_usd: float,
    prefix_chars: int,
    parity_texts: Sequence[str] = (),
    actions: Sequence[CascadeAction] = ACTIONS,
) -> dict[str, Any]:
    """`prepare_value_model`, then write the file: the section naming it is returned."""
    data, section = prepare_value_model(
        pipeline,
        price_per_correct_usd=price_per_correct_usd,
        prefix_chars=prefix_chars,
        parity_texts=parity_texts,
        actions=actions,
    )
    write_model_file(model_dir, data)
    return section


__all__ = [
    "POLICY_VALUE",
    "ValueParity",
    "check_parity",
    "export",
    "fit_value_pipeline",
    "predict",
    "prepare_value_model",
    "write_model_file",
    "write_value_model",
]
