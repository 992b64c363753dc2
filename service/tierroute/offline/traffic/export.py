"""`tierroute export --labeled`: the labelled sample as a recorded-outcome file.

The file follows the shared data schema (`../shared/data/README.md`), so `train`,
`calibrate` and `eval` read it as they read dev, and the replay backend can serve it:

- one record per logged question whose every configured tier is labelled;
- `models`: per tier, its model's answer (`response`), the answer it states (`pred`, by the
  replay backend's extractor), tokens and cost at the configured prices, and the reference
  judge's verdict as `correct` (1 pass, 0 fail; an unavailable verdict counts as 0, the
  safe side, and is listed under `judge`);
- `tiers`: the cheapest tier's model as `cheap`, the top tier's as `expensive`, the middle
  one's (tier n // 2; the top tier's with two tiers) as `mid`;
- `task`, `task_type` and `category` are the logged query type, `min_tier_correct` follows
  from the verdicts, `ts` is when the question was logged.

Records are written oldest question first, with a fixed gzip mtime, so the same labels
make the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS
from tierroute.providers import extract_answer
from tierroute.querylog import QueryRecord, Store, TierLabel
from tierroute.querylog.records import ts_text
from tierroute.settings import Settings, TierConfig

SPLIT = "own"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: str
    records: int
    incomplete: int
    unavailable_verdicts: int
    min_tier_correct: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute export --json` prints."""
        return {
            "path": self.path,
            "records": self.records,
            "questions_not_fully_labelled": self.incomplete,
            "unavailable_verdicts_counted_wrong": self.unavailable_verdicts,
            "min_tier_correct": dict(self.min_tier_correct),
        }


def trio_tiers(tiers: Sequence[TierConfig]) -> dict[str, TierConfig]:
    """The tiers playing the schema's cheap, mid and expensive keys."""
    middle = tiers[len(tiers) // 2] if len(tiers) > 2 else tiers[-1]
    return {"cheap": tiers[0], "mid": middle, "expensive": tiers[-1]}


def outcome_record(
    record: QueryRecord, labels: Mapping[str, TierLabel], tiers: Sequence[TierConfig]
) -> dict[str, Any]:
    """One question's labels as a record of the shared schema."""
    models: dict[str, Any] = {}
    for tier in tiers:
        lab = labels[tier.name]
        answer = lab.answer_text or ""
        models[lab.model or tier.model] = {
            "canonical_model": lab.model or tier.model,
            "tier": tier.name,
            "correct": int(lab.verdict == "pass"),
            "pred": extract_answer(answer),
            "input_tokens": lab.input_tokens,
            "output_tokens": lab.output_tokens,
            "cost_usd": lab.cost_usd,
            "response": answer,
            "stop_reason": lab.stop_reason,
            "judge": {
                "tier": lab.judge_tier,
                "model": lab.judge_model,
                "verdict": lab.verdict,
                "issues": list(lab.issues),
                "cost_usd": lab.judge_cost_usd,
            },
        }
    trio = {key: t.model for key, t in trio_tiers(tiers).items()}
    first = next((k for k in TIER_KEYS if models[trio[k]]["correct"]), "none")
    kind = record.query_type or "unknown"
    return {
        "id": f"querylog/{record.request_id}",
        "task": kind,
        "task_type": kind,
        "category": kind,
        "prompt": record.query_text,
        "tiers": trio,
        "models": models,
        "min_tier_correct": first,
        "dup_group": record.query_sha256,
        "ts": ts_text(record.ts),
        "split": SPLIT,
    }


async def labelled_records(
    store: Store, settings: Settings
) -> tuple[list[dict[str, Any]], int, int]:
    """(records, questions not fully labelled, unavailable verdicts), oldest question first."""
    by_request: dict[str, dict[str, TierLabel]] = defaultdict(dict)
    for lab in await store.fetch_tier_labels():
        by_request[lab.request_id][lab.tier] = lab
    names = [t.name for t in settings.tiers]
    full = {rid for rid, tiers in by_request.items() if all(n in tiers for n in names)}
    out: list[tuple[QueryRecord, dict[str, Any]]] = []
    unavailable = 0
    async for record in store.iter_queries():
        if record.request_id in full and record.query_text:
            labels = by_request[record.request_id]
            unavailable += sum(labels[n].verdict == "unavailable" for n in names)
            out.append((record, outcome_record(record, labels, settings.tiers)))
            full.discard(record.request_id)
    out.sort(key=lambda pair: (pair[0].ts, pair[0].request_id))
    return [doc for _, doc in out], len(by_request) - len(out), unavailable


def write_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """JSON lines, gzip when the name ends in .gz (mtime 0: same records, same bytes)."""
    if path.parent and not path.parent.exists():
        raise ConfigError(f"directory not found: {path.parent}")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if path.suffix == ".gz":
        with (
            gzip.GzipFile(path, "wb", mtime=0) as raw,
            io.TextIOWrapper(raw, encoding="utf-8") as fh,
        ):
            fh.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")


async def export_labelled(store: Store, settings: Settings, out: Path) -> ExportSummary:
    """Write the labelled sample to `out`; ConfigError when nothing is fully labelled."""
    records, incomplete, unavailable = await labelled_records(store, settings)
    if not records:
        raise ConfigError("no question has every tier labelled yet: run tierroute label first")
    write_records(out, records)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["min_tier_correct"]] = counts.get(r["min_tier_correct"], 0) + 1
    return ExportSummary(
        str(out), len(records), incomplete, unavailable, dict(sorted(counts.items()))
    )
