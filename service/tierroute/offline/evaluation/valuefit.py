"""The value policy's training step inside calibration and evaluation: out-of-fold estimates.

Training rows are the calibration tables (what the cascade engine did per record under each
fixed setting, scored): per action of `tierroute.routing.plan.VALUE_ACTIONS`, whether the
final answer was correct and the tokens its calls billed per payer (each tier, then the
agreement probe; input, output). Like the classifier's, every record's estimates come from
a model fitted on the other folds only (the same folds), so no record is routed by a model
that saw its outcome. This reads ground truth (through the tables), as training does.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.pipeline import Pipeline

from tierroute.model.operating import PREDICTED_KINDS, CalibrationData
from tierroute.model.value import plain_actions, top_action
from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.training.value_fit import fit_value_pipeline, predict
from tierroute.routing import VALUE_ACTIONS, CascadeAction, classifier_text

logger = logging.getLogger(__name__)

Estimates = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def action_targets(
    quality: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    columns: npt.NDArray[np.int64] | Sequence[int],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-action training targets: the tables' columns that play each action, serially:
    correctness (rows, A) and input/output tokens per tier (rows, A, T, 2). The Cascade's
    calls carry no cache_control, so the cache kinds the tables keep are zero."""
    index = [int(c) for c in columns]
    return quality[:, index], tokens[:, index, :, :PREDICTED_KINDS]


def featurised(data: EvalData, prefix_chars: int) -> list[str]:
    """The classifier's text of every record, in record order."""
    return [classifier_text(r.prompt, prefix_chars) for r in data.records]


def _fit_and_estimate(
    texts: list[str],
    quality: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    held_out: list[str],
    hyper: Mapping[str, Any],
) -> Estimates:
    pipeline = fit_value_pipeline(texts, quality, tokens, **hyper)
    return predict(pipeline, held_out, tokens.shape[2])


def out_of_fold(
    texts: Sequence[str],
    quality: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    folds: npt.NDArray[np.int64],
    workers: int = 1,
    **hyper: Any,
) -> Estimates:
    """Per-action P(correct) and tokens (rows, A, T, 2) for every row, from the model
    fitted without its fold (`tokens` as `action_targets` gives them).

    `hyper` goes to `fit_value_pipeline` (quality_c, max_features) for model selection.
    """
    n_folds = int(folds.max()) + 1
    jobs = []
    for fold in range(n_folds):
        held_out = folds == fold
        train = [t for t, h in zip(texts, held_out, strict=True) if not h]
        test = [t for t, h in zip(texts, held_out, strict=True) if h]
        jobs.append((held_out, (train, quality[~held_out], tokens[~held_out], test, hyper)))
    p = np.zeros(quality.shape, dtype=np.float64)
    c = np.zeros(tokens.shape, dtype=np.float64)
    logger.info("value model: fitting %s fold models on %s records", n_folds, len(texts))
    if workers <= 1:
        for held_out, args in jobs:
            p[held_out], c[held_out] = _fit_and_estimate(*args)
        return p, c
    # spawn, not fork: a fork would copy the parent's BLAS threads mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, n_folds), mp_context=context) as pool:
        futures = [(held_out, pool.submit(_fit_and_estimate, *args)) for held_out, args in jobs]
        for held_out, future in futures:
            p[held_out], c[held_out] = future.result()
    return p, c


def actions_for(estimates: Estimates) -> tuple[CascadeAction, ...]:
    """The actions out-of-fold `estimates` cover: VALUE_ACTIONS (the agreement checks last)
    or its first six when the tables had no agreement columns."""
    return VALUE_ACTIONS[: estimates[0].shape[1]]


def evidence(
    estimates: Estimates,
    quality: npt.NDArray[np.float64],
    tokens: npt.NDArray[np.float64],
    allowed: npt.NDArray[np.bool_] | None,
    n_tiers: int,
) -> CalibrationData:
    """The calibration evidence a bundle stores: out-of-fold `estimates`, and per action
    the realised `quality` (rows, A) and `tokens` (rows, A, payers, 4) and which actions
    each row may take."""
    actions = actions_for(estimates)
    return CalibrationData(
        oof_p=estimates[0],
        oof_tokens=estimates[1],
        quality=quality,
        tokens=tokens,
        top_action=top_action(actions, n_tiers),
        allowed=allowed,
        plain_actions=plain_actions(actions, n_tiers),
    )


def fit_all(
    texts: Sequence[str], quality: npt.NDArray[np.float64], tokens: npt.NDArray[np.float64]
) -> Pipeline:
    """The model that ships: fitted on every row."""
    return fit_value_pipeline(texts, quality, tokens)


__all__ = [
    "Estimates",
    "action_targets",
    "actions_for",
    "evidence",
    "featurised",
    "fit_all",
    "out_of_fold",
]
