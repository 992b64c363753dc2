"""The scoring step: the only part of the evaluation that reads ground truth.

Strategies answer first (`tierroute.offline.evaluation.harness`), from data with no ground truth in
it; only then does `GroundTruth` look up whether the recorded model that produced each final
answer was correct. The one exception is the oracle, whose definition is "the cheapest tier
that was correct": its start tiers are computed here, from the truth, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS, iter_records

NO_TIER = -1


@dataclass(frozen=True)
class GroundTruth:
    """Per record: which recorded models answered correctly, and the cheapest correct tier."""

    correct: Mapping[str, Mapping[str, int]]
    # Index into TIER_KEYS of the cheapest correct tier of the trio, or NO_TIER.
    min_tier: Mapping[str, int]

    @classmethod
    def load(cls, path: Path, limit: int | None = None) -> GroundTruth:
        """Read the ground truth of (the first `limit` records of) a recorded-outcome file."""
        correct: dict[str, dict[str, int]] = {}
        min_tier: dict[str, int] = {}
        for position, record in enumerate(iter_records(path)):
            if limit is not None and position >= limit:
                break
            record_id = str(record.get("id") or f"#{position}")
            try:
                outcomes = {key: int(value["correct"]) for key, value in record["models"].items()}
                trio = [record["tiers"][key] for key in TIER_KEYS]
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{path}: record {record_id} has no ground truth to score with ({exc!r})"
                ) from exc
            correct[record_id] = outcomes
            min_tier[record_id] = next(
                (i for i, model in enumerate(trio) if outcomes.get(model)), NO_TIER
            )
        return cls(correct, min_tier)

    def is_correct(self, record_id: str, model: str) -> int:
        """1 when `model`'s recorded answer to `record_id` was correct, else 0."""
        try:
            return self.correct[record_id][model]
        except KeyError as exc:
            raise ConfigError(f"no recorded outcome of {model} for record {record_id}") from exc


def oracle_start_tiers(
    truth: GroundTruth, replay_ids: Mapping[str, str], tier_names: Sequence[str]
) -> dict[str, str]:
    """Record id -> the cheapest tier that answered it correctly (the cheapest if none did).

    `replay_ids` maps each record to the record whose answers the replay backend serves
    for its prompt, whose truth is the one that counts.
    """
    if len(tier_names) != len(TIER_KEYS):
        raise ConfigError("the oracle is defined for the three tiers of the recorded trio")
    out = {}
    for record_id, served in replay_ids.items():
        best = truth.min_tier[served]
        out[record_id] = tier_names[best if best != NO_TIER else 0]
    return out
