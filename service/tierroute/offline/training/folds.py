"""Out-of-fold probabilities from grouped, stratified k-fold cross-validation.

MMLU-Pro holds some questions more than once (`dup_group`); a group always stays in one fold,
so no fold is scored on a question its model was trained on.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from tierroute.offline.training.labels import NoneLabel, TrainingSet, training_rows
from tierroute.offline.training.model import RANDOM_STATE, fit_pipeline


def make_folds(data: TrainingSet, n_folds: int, seed: int = RANDOM_STATE) -> npt.NDArray[np.int64]:
    """The fold (0..n_folds-1) of every row, stratified by label and grouped by dup_group.

    Folds stratify on the raw label, "none" included, so that both none-label policies are
    compared on the very same folds.
    """
    strata = data.labels.copy()
    counts = Counter(strata.tolist())
    largest = max(counts, key=lambda label: (counts[label], -label))
    for label, count in counts.items():
        if count < n_folds:
            # A class rarer than the fold count cannot be spread; fold it into the largest.
            strata[strata == label] = largest
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(data), -1, dtype=np.int64)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(data)), strata, data.groups)):
        folds[test] = fold
    return folds


def out_of_fold_proba(
    data: TrainingSet,
    folds: npt.NDArray[np.int64],
    none_label: NoneLabel,
    *,
    progress: bool = True,
    desc: str = "cross-validation",
) -> npt.NDArray[np.float64]:
    """Per-tier probabilities for every row from the model that did not see its fold."""
    n_folds = int(folds.max()) + 1
    proba = np.zeros((len(data), len(data.tier_names)), dtype=np.float64)
    for fold in tqdm(range(n_folds), desc=desc, unit="fold", disable=not progress):
        held_out = folds == fold
        train = data.subset(~held_out)
        keep, y = training_rows(train.labels, none_label)
        texts = [t for t, k in zip(train.texts, keep, strict=True) if k]
        pipeline = fit_pipeline(texts, y, len(data.tier_names))
        test_texts = [t for t, h in zip(data.texts, held_out, strict=True) if h]
        proba[held_out] = pipeline.predict_proba(test_texts)
    return proba
