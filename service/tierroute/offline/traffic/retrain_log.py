"""`tierroute retrain` from the query log alone, with no benchmark file.

- Training data: the questions `tierroute label` labelled (every tier's answer, tokens and
  cost, the reference judge's verdicts: the records `tierroute export` writes), plus the
  calls the log labels by itself (judge verdicts on Cascade hops and user Feedback, as
  `tierroute.offline.retrain.labels_from_store` reads them), priced at the labelled
  questions' mean cost per tier (or the configured prices when there are none).
- The gate: the most recent labelled questions, `holdout` of them by time, are held out;
  the candidate trains on everything older (and on no logged copy of a held-out question)
  and is compared with the served model on the held-out questions by the evaluation
  harness, scored by the judge's verdicts; it is promoted only when not worse by the
  margins (`tierroute.offline.retrain.gate`).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.model import ModelRegistry, bundle_version
from tierroute.offline.retrain import (
    LogLabels,
    RetrainOptions,
    RetrainResult,
    evaluate_bundles,
    gate,
    logged_record,
    promote_if_passed,
    train_candidate,
)
from tierroute.offline.traffic.export import labelled_records, trio_tiers, write_records
from tierroute.outcomes import TIER_KEYS
from tierroute.providers import estimate_tokens
from tierroute.querylog import Store
from tierroute.settings import Settings

logger = logging.getLogger(__name__)
MIN_HELD_OUT = 20


async def log_training_data(
    store: Store, settings: Settings, log: LogLabels
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(labelled questions oldest first, log-labelled calls as records) from the log."""
    labelled, _, _ = await labelled_records(store, settings)
    texts = {str(r["prompt"]).strip() for r in labelled}
    trio = {key: tier.model for key, tier in trio_tiers(settings.tiers).items()}
    costs = _tier_costs(labelled, settings, log)
    extra = [
        logged_record(example, trio, costs, len(settings.tiers))
        for example in log.examples
        if example.text.strip() not in texts
    ]
    return labelled, extra


def _tier_costs(
    labelled: Sequence[Mapping[str, Any]], settings: Settings, log: LogLabels
) -> dict[str, float]:
    trio = trio_tiers(settings.tiers)
    if labelled:
        return {
            key: math.fsum(float(r["models"][r["tiers"][key]]["cost_usd"]) for r in labelled)
            / len(labelled)
            for key in TIER_KEYS
        }
    asked = [estimate_tokens(e.text) for e in log.examples] or [0]
    mean_in = sum(asked) / len(asked)
    out = settings.routing.expected_output_tokens
    return {key: trio[key].cost_usd(round(mean_in), out) for key in TIER_KEYS}


def split_by_time(
    labelled: Sequence[dict[str, Any]], fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(older, most recent `fraction`) of the labelled questions, by logged time."""
    ordered = sorted(labelled, key=lambda r: (str(r["ts"]), str(r["id"])))
    held = max(MIN_HELD_OUT, math.ceil(fraction * len(ordered)))
    if len(ordered) < held + MIN_HELD_OUT:
        raise ConfigError(
            f"retraining from the log needs at least {2 * MIN_HELD_OUT} labelled questions "
            f"(tierroute label); the log has {len(ordered)}"
        )
    return list(ordered[:-held]), list(ordered[-held:])


def retrain_from_log(
    settings: Settings,
    log: LogLabels,
    labelled: Sequence[dict[str, Any]],
    extra: Sequence[dict[str, Any]],
    *,
    registry: ModelRegistry,
    options: RetrainOptions,
) -> RetrainResult:
    """Train on the older labelled traffic (and log labels), gate on the newest, promote."""
    current_dir = registry.promoted_dir()
    train, held = split_by_time(labelled, options.holdout)
    held_texts = {str(r["prompt"]).strip() for r in held}
    extra = [r for r in extra if str(r["prompt"]).strip() not in held_texts]
    notes = [
        f"held out by time: the {len(held)} most recent labelled questions (from {held[0]['ts']})"
    ]
    served_version = bundle_version(current_dir)
    with tempfile.TemporaryDirectory(prefix="tierroute-retrain-log-") as tmp:
        work = Path(tmp)
        train_file, held_file = work / "train.jsonl.gz", work / "held.jsonl.gz"
        write_records(train_file, [*train, *extra])
        write_records(held_file, held)
        candidate_dir = train_candidate(train_file, work / "candidate", current_dir, options)
        figures = evaluate_bundles(
            settings,
            held_file,
            {str(r["id"]) for r in held},
            {"candidate": candidate_dir, "current": current_dir},
        )
        decision = gate(
            figures["candidate"],
            figures["current"],
            options.margins,
            served_version=served_version,
            logged_examples=len(train) + len(extra),
        )
        promoted = promote_if_passed(
            settings,
            decision,
            train,
            candidate_dir=candidate_dir,
            registry=registry,
            work=work,
            options=options,
            notes=notes,
            source="tierroute retrain (log)",
        )
    return RetrainResult(
        log=log,
        train_records=len(train) + len(extra),
        held_out_records=len(held),
        decision=decision,
        promoted=promoted,
        registry=str(registry.root),
        notes=tuple(notes),
    )
