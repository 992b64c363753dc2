"""Out-of-fold classifier scores, so no record is routed by a model that was trained on it.

The folds are the training code's own (`tierroute.offline.training.folds.make_folds`: stratified
by label, `dup_group` kept in one fold), and each fold's model is the training code's
pipeline (`tierroute.offline.training.model.fit_pipeline`) fitted on the other folds. Held-out rows
are scored with that fold's scikit-learn pipeline rather than an ONNX export of it: the
ONNX graph reproduces the pipeline (parity is tested in tests/test_training.py), and
scikit-learn scores a whole fold in one call.

This is the evaluation's training step: it reads the labels of the training folds, as
training does. The harness then routes with `PrecomputedScorer`, which only knows the
probabilities of its own fold's held-out rows.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError
from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.training import calibrate
from tierroute.offline.training.folds import make_folds
from tierroute.offline.training.labels import (
    NoneLabel,
    TrainingSet,
    build_training_set,
    check_trainable,
    training_rows,
)
from tierroute.offline.training.model import RANDOM_STATE, fit_pipeline
from tierroute.outcomes import iter_records
from tierroute.routing import (
    VALUE_ACTIONS,
    CascadePlan,
    RiskThresholds,
    allowed_actions,
    classifier_text,
    plan_from,
)

logger = logging.getLogger(__name__)

GROUPING = "dup_group (MMLU-Pro duplicates share a fold), else the record"


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class PrecomputedScorer:
    """A router `Scorer` that answers from out-of-fold probabilities of one fold's rows.

    It knows nothing but its fold's held-out rows: a query from any other fold (or one
    never evaluated) is a ConfigError, so a record can only be routed by the model that
    did not see it.
    """

    def __init__(
        self,
        version: str,
        thresholds: RiskThresholds,
        probabilities: Mapping[str, Sequence[float]],
        prefix_chars: int,
        *,
        value: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
        price_per_correct_usd: float | None = None,
    ) -> None:
        self.version = version
        self.thresholds = thresholds
        self._prefix_chars = prefix_chars
        self._table = {
            _key(classifier_text(text, prefix_chars)): tuple(p) for text, p in probabilities.items()
        }
        # The value policy's out-of-fold estimates (P(correct), cost) per action, if any.
        self._value = (
            {
                _key(classifier_text(text, prefix_chars)): (tuple(p), tuple(c))
                for text, (p, c) in value.items()
            }
            if value is not None and price_per_correct_usd is not None
            else None
        )
        self._price = price_per_correct_usd

    def cascade_plan(self, text: str) -> CascadePlan | None:
        """The value policy's plan from the record's held-out estimates (None: no policy)."""
        if self._value is None or self._price is None:
            return None
        try:
            p, c = self._value[_key(classifier_text(text, self._prefix_chars))]
        except KeyError as exc:
            raise ConfigError(
                f"{self.version} has no out-of-fold value estimate for this query: it is not "
                "one of the fold's held-out records"
            ) from exc
        # The estimates cover ACTIONS, then the agreement checks when the tables had them;
        # those apply only where the prompt asks for a comparable final answer, as served.
        actions = VALUE_ACTIONS[: len(p)]
        return plan_from(p, c, self._price, actions, allowed=allowed_actions(actions, text))

    def predict_proba(self, text: str) -> list[float]:
        """The held-out probabilities of the record whose prompt is `text`."""
        try:
            return list(self._table[_key(classifier_text(text, self._prefix_chars))])
        except KeyError as exc:
            raise ConfigError(
                f"{self.version} has no out-of-fold score for this query: it is not one of "
                "the fold's held-out records"
            ) from exc


@dataclass(frozen=True)
class CrossValidation:
    """Folds, out-of-fold probabilities and cross-fitted thresholds for one data file."""

    k: int
    seed: int
    prefix_chars: int
    none_label: NoneLabel
    # Record id -> fold, and record id -> its out-of-fold probabilities per tier.
    fold_of: Mapping[str, int]
    proba: Mapping[str, tuple[float, ...]]
    # Per fold: thresholds calibrated toward `target` on the other folds' rows only.
    fold_risk: tuple[tuple[float, ...], ...]
    target: calibrate.Target

    def scorer(
        self,
        fold: int,
        data: EvalData,
        thresholds: RiskThresholds,
        *,
        value: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
        price_per_correct_usd: float | None = None,
    ) -> PrecomputedScorer:
        """The fold's scorer: its held-out rows' probabilities, with `thresholds`; with
        `value` (out-of-fold estimates in record order) and a price, the value policy too.
        """
        rows = {r.prompt: self.proba[r.id] for r in data.records if self.fold_of[r.id] == fold}
        estimates = None
        if value is not None:
            estimates = {
                r.prompt: (value[0][i], value[1][i])
                for i, r in enumerate(data.records)
                if self.fold_of[r.id] == fold
            }
        return PrecomputedScorer(
            f"cv-fold-{fold}",
            thresholds,
            rows,
            self.prefix_chars,
            value=estimates,
            price_per_correct_usd=price_per_correct_usd,
        )

    def proba_matrix(self, data: EvalData) -> npt.NDArray[np.float64]:
        """Out-of-fold probabilities in record order."""
        return np.array([self.proba[r.id] for r in data.records], dtype=np.float64)

    def fold_array(self, data: EvalData) -> npt.NDArray[np.int64]:
        """Folds in record order."""
        return np.array([self.fold_of[r.id] for r in data.records], dtype=np.int64)

    def as_dict(self) -> dict[str, Any]:
        """For reports."""
        return {
            "folds": self.k,
            "seed": self.seed,
            "grouping": GROUPING,
            "none_label": self.none_label,
            "prefix_chars": self.prefix_chars,
            "scoring": (
                "each record is routed by the scikit-learn pipeline of the fold that held it "
                "out (ONNX parity with that pipeline is tested separately)"
            ),
            "classifier_thresholds": {
                "target": self.target.as_dict(),
                "per_fold": [list(r) for r in self.fold_risk],
                "how": "per fold, calibrated on the other folds' out-of-fold rows",
            },
        }


def training_set(path: Path, limit: int | None, prefix_chars: int) -> TrainingSet:
    """The training code's view of (the first `limit` records of) `path`."""
    records: list[dict[str, Any]] = []
    for record in iter_records(path):
        if limit is not None and len(records) >= limit:
            break
        records.append(record)
    return build_training_set(records, prefix_chars)


def _fit_and_score(
    texts: list[str], labels: npt.NDArray[np.int64], n_classes: int, held_out: list[str]
) -> npt.NDArray[np.float64]:
    pipeline = fit_pipeline(texts, labels, n_classes)
    proba: npt.NDArray[np.float64] = pipeline.predict_proba(held_out)
    return proba


def out_of_fold(
    data: TrainingSet, folds: npt.NDArray[np.int64], none_label: NoneLabel, workers: int
) -> npt.NDArray[np.float64]:
    """Per-tier probabilities for every row from the model fitted without its fold."""
    n_folds = int(folds.max()) + 1
    jobs = []
    for fold in range(n_folds):
        held_out = folds == fold
        train = data.subset(~held_out)
        keep, labels = training_rows(train.labels, none_label)
        texts = [t for t, k in zip(train.texts, keep, strict=True) if k]
        test = [t for t, h in zip(data.texts, held_out, strict=True) if h]
        jobs.append((held_out, (texts, labels, len(data.tier_names), test)))
    proba = np.zeros((len(data), len(data.tier_names)), dtype=np.float64)
    if workers <= 1:
        for held_out, args in jobs:
            proba[held_out] = _fit_and_score(*args)
        return proba
    # spawn, not fork: a fork would copy the parent's BLAS threads mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, n_folds), mp_context=context) as pool:
        futures = [(held_out, pool.submit(_fit_and_score, *args)) for held_out, args in jobs]
        for held_out, future in futures:
            proba[held_out] = future.result()
    return proba


def cross_validate(
    data: EvalData,
    *,
    k: int,
    target: calibrate.Target,
    prefix_chars: int,
    none_label: NoneLabel = "cheap",
    workers: int = 1,
    seed: int = RANDOM_STATE,
) -> CrossValidation:
    """Folds, out-of-fold probabilities and per-fold thresholds for the records of `data`."""
    train = training_set(data.path, data.limit, prefix_chars)
    if list(train.ids) != [r.id for r in data.records]:
        raise ConfigError(f"{data.path}: training and evaluation read different records")
    check_trainable(train, k, none_label)
    folds = make_folds(train, k, seed)
    logger.info("cross-validation: fitting %s fold models on %s records", k, len(train))
    proba = out_of_fold(train, folds, none_label, workers)
    (fitted,) = calibrate.cross_fitted(proba, folds, train, [target])
    if fitted is None:
        raise ConfigError(f"some fold cannot meet the classifier target: {target.statement()}")
    _, per_fold = fitted
    return CrossValidation(
        k=k,
        seed=seed,
        prefix_chars=prefix_chars,
        none_label=none_label,
        fold_of={rid: int(f) for rid, f in zip(train.ids, folds, strict=True)},
        proba={rid: tuple(float(v) for v in p) for rid, p in zip(train.ids, proba, strict=True)},
        fold_risk=tuple(tuple(r) for r in per_fold),
        target=target,
    )
