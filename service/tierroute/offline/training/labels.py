"""Turn a recorded-outcome file into the arrays training and calibration need.

Labels come from `min_tier_correct`; per-tier correctness and cost come from the recorded
default trio. Both are ground truth and are read here, at training time, only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS, iter_records, tier_model
from tierroute.routing import classifier_text

# A record whose label is "none": no tier of the trio answered correctly.
NO_TIER = -1
NoneLabel = Literal["cheap", "drop"]
NONE_LABEL_CHOICES: tuple[NoneLabel, ...] = ("cheap", "drop")


@dataclass(frozen=True)
class TrainingSet:
    """Classifier inputs, labels and recorded outcomes, one row per record."""

    ids: tuple[str, ...]
    # The prompts as recorded, and the exact text the classifier sees for each.
    prompts: tuple[str, ...]
    texts: tuple[str, ...]
    # Index into `tier_names` of the cheapest correct tier, or NO_TIER.
    labels: npt.NDArray[np.int64]
    tasks: npt.NDArray[np.str_]
    # Records sharing a group (MMLU-Pro duplicates) must share a fold.
    groups: npt.NDArray[np.str_]
    # correct[i, t] and cost[i, t]: what tier t's recorded answer to record i scored and cost.
    correct: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]
    tier_names: tuple[str, ...] = TIER_KEYS

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: npt.NDArray[np.bool_]) -> TrainingSet:
        """The rows where `mask` is true."""
        index = np.flatnonzero(mask)
        return TrainingSet(
            ids=tuple(self.ids[i] for i in index),
            prompts=tuple(self.prompts[i] for i in index),
            texts=tuple(self.texts[i] for i in index),
            labels=self.labels[index],
            tasks=self.tasks[index],
            groups=self.groups[index],
            correct=self.correct[index],
            cost=self.cost[index],
            tier_names=self.tier_names,
        )


def training_rows(
    labels: npt.NDArray[np.int64], none_label: NoneLabel
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Which rows the classifier trains on, and their class labels, under a none-policy.

    "cheap" keeps unanswerable records as cheap-tier examples, since paying for a higher
    tier buys nothing on them; "drop" leaves them out of training (they are still routed
    and scored in every evaluation).
    """
    if none_label == "cheap":
        return np.ones(len(labels), dtype=bool), np.where(labels == NO_TIER, 0, labels)
    if none_label == "drop":
        keep = labels != NO_TIER
        return keep, labels[keep]
    raise ConfigError(f"none-label policy must be one of {NONE_LABEL_CHOICES}, not {none_label!r}")


def _label(record: Mapping[str, Any], where: str) -> int:
    name = record.get("min_tier_correct")
    if name is None:
        # Logs of the same schema may omit the derived field; derive it the same way.
        for index, tier in enumerate(TIER_KEYS):
            if tier_model(record, tier).get("correct"):
                return index
        return NO_TIER
    if name == "none":
        return NO_TIER
    if name not in TIER_KEYS:
        raise ConfigError(f"{where}: min_tier_correct {name!r} is not one of {TIER_KEYS}")
    return TIER_KEYS.index(name)


def build_training_set(records: Sequence[Mapping[str, Any]], prefix_chars: int) -> TrainingSet:
    """Arrays for `records`; ConfigError names the first record that does not fit."""
    ids: list[str] = []
    prompts: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    tasks: list[str] = []
    groups: list[str] = []
    correct: list[list[float]] = []
    cost: list[list[float]] = []
    for position, record in enumerate(records):
        record_id = str(record.get("id", f"#{position}"))
        where = f"record {record_id}"
        try:
            outcomes = [tier_model(record, tier) for tier in TIER_KEYS]
            correct.append([float(o["correct"]) for o in outcomes])
            cost.append([float(o["cost_usd"]) for o in outcomes])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{where}: needs 'tiers' naming {TIER_KEYS} and their outcomes "
                f"with 'correct' and 'cost_usd' ({exc!r})"
            ) from exc
        if not isinstance(record["prompt"], str):
            raise ConfigError(f"{where}: 'prompt' must be a string")
        ids.append(record_id)
        prompts.append(record["prompt"])
        texts.append(classifier_text(record["prompt"], prefix_chars))
        labels.append(_label(record, where))
        tasks.append(str(record.get("task", "all")))
        groups.append(str(record.get("dup_group") or record_id))
    return TrainingSet(
        ids=tuple(ids),
        prompts=tuple(prompts),
        texts=tuple(texts),
        labels=np.array(labels, dtype=np.int64),
        tasks=np.array(tasks, dtype=np.str_),
        groups=np.array(groups, dtype=np.str_),
        correct=np.array(correct, dtype=np.float64).reshape(-1, len(TIER_KEYS)),
        cost=np.array(cost, dtype=np.float64).reshape(-1, len(TIER_KEYS)),
    )


def load_training_set(path: Path, prefix_chars: int) -> TrainingSet:
    """Read a recorded-outcome file into a TrainingSet."""
    return build_training_set(list(iter_records(path)), prefix_chars)


def check_trainable(data: TrainingSet, folds: int, none_label: NoneLabel) -> None:
    """Refuse data too small to cross-validate, with a message saying what is missing."""
    n_classes = len(data.tier_names)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, not {folds}")
    if len(data) < folds * n_classes:
        raise ConfigError(
            f"{len(data)} records are too few to train with {folds} folds and "
            f"{n_classes} tiers: need at least {folds * n_classes}"
        )
    _, y = training_rows(data.labels, none_label)
    counts = Counter(int(v) for v in y)
    short = {
        name: counts.get(index, 0)
        for index, name in enumerate(data.tier_names)
        if counts.get(index, 0) < folds
    }
    if short:
        raise ConfigError(
            f"every tier needs at least {folds} records labelled with it (one per fold) "
            f"under none-label policy {none_label!r}; too few for {short}"
        )
    n_groups = len(set(data.groups.tolist()))
    if n_groups < folds:
        raise ConfigError(f"{n_groups} distinct question groups cannot fill {folds} folds")
