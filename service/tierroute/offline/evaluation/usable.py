"""Which records of a recorded-outcome file an evaluation can answer and score, and why not.

Files other than dev are not always complete: a source may lack a model's answer text, hold
an empty answer, or lack a model's token counts or grade. The evaluation never asserts on
them; it applies these rules, and the report counts every case (`records_check`):

- a tier model's answer text missing, null or empty: kept. The replay backend serves the
  empty text, and the answer is scored by its recorded grade, as any other;
- a tier model missing from the record, or lacking its grade (`correct`) or its token
  counts (`input_tokens`, `output_tokens`): the record is skipped, since it can be neither
  scored nor priced;
- any other model (a probe, an unused model) lacking its grade or token counts: that model
  is dropped from the record, which is kept;
- a record without prompt text: skipped.

When nothing is skipped or dropped the file is evaluated as it is.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierroute.offline.evaluation.eval_data import PRICES_FILE
from tierroute.outcomes import TIER_KEYS, file_sha256, iter_records

RULES = {
    "empty_answer_text": "kept: the empty text is served and scored by its recorded grade",
    "tier_model_missing": "skipped: a tier's model has no outcome in the record",
    "tier_model_ungraded": "skipped: a tier's model has no grade (correct) to score with",
    "tier_model_untokened": "skipped: a tier's model has no token counts to price with",
    "no_prompt": "skipped: the record has no prompt text",
    "other_model_dropped": "kept without that model: a model outside the tiers lacks a grade "
    "or token counts",
}
_NEEDED = ("correct", "input_tokens", "output_tokens")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problem(record: Mapping[str, Any]) -> str | None:
    """Why the record must be skipped, or None."""
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "no_prompt"
    models = record.get("models")
    tiers = record.get("tiers")
    if not isinstance(models, Mapping) or not isinstance(tiers, Mapping):
        return "tier_model_missing"
    for key in TIER_KEYS:
        outcome = models.get(tiers.get(key))
        if not isinstance(outcome, Mapping):
            return "tier_model_missing"
        if not _number(outcome.get("correct")):
            return "tier_model_ungraded"
        if not (_number(outcome.get("input_tokens")) and _number(outcome.get("output_tokens"))):
            return "tier_model_untokened"
    return None


def _complete(outcome: Any) -> bool:
    return isinstance(outcome, Mapping) and all(_number(outcome.get(k)) for k in _NEEDED)


def usable_view(path: Path, dest_dir: Path) -> tuple[Path, dict[str, Any]]:
    """`path` itself when every record is usable, else a copy in `dest_dir` without the
    records to skip and the models to drop; and the `records_check` section for the report."""
    counts: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    changed = False
    total = 0
    for record in iter_records(path):
        total += 1
        problem = _problem(record)
        if problem is not None:
            counts[problem] += 1
            changed = True
            continue
        tier_models = {record["tiers"][k] for k in TIER_KEYS}
        models = {
            name: outcome
            for name, outcome in record["models"].items()
            if name in tier_models or _complete(outcome)
        }
        if len(models) != len(record["models"]):
            counts["other_model_dropped"] += 1
            changed = True
        if any(not models[m].get("response") for m in tier_models):
            counts["empty_answer_text"] += 1
        kept.append({**record, "models": models})
    section: dict[str, Any] = {
        "records": total,
        "evaluated": len(kept),
        "skipped": sum(n for k, n in counts.items() if RULES[k].startswith("skipped")),
        "counts": dict(sorted(counts.items())),
        "rules": {k: RULES[k] for k in sorted(counts)},
    }
    if not changed:
        return path, section
    dest_dir.mkdir(parents=True, exist_ok=True)
    view = dest_dir / path.name
    with gzip.open(view, "wt", encoding="utf-8") as out:
        for record in kept:
            out.write(json.dumps(record) + "\n")
    # The view keeps the source's prices file beside it, as the source had.
    prices = path.parent / PRICES_FILE
    if prices.is_file():
        os.symlink(prices.resolve(), dest_dir / prices.name)
    section["source_sha256"] = file_sha256(path)
    return view, section


def check_lines(report: Mapping[str, Any]) -> list[str]:
    """What the run could not answer or reach on the file: skipped records, unattainable
    targets (each one line)."""
    lines = []
    check = report.get("records_check") or {}
    for key, n in check.get("counts", {}).items():
        lines.append(f"records: {n} x {key}: {check['rules'][key]}")
    for e in report.get("unattainable", []):
        lines.append(
            f"unattainable on this file: {e['what']} ({e['target']}): {e['reason']}; {e['instead']}"
        )
    return lines
