"""`eval --trio`: a view of a recorded-outcome file with other recorded models playing the tiers.

This is a data-preparation step, like the file's own `min_tier_correct`: it re-derives that
training label for the chosen trio (cross-validation trains on it). The harness never reads
it: `load_eval_data` keeps no ground truth of the view, as of any file.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS, file_sha256, iter_records


def trio_view(path: Path, trio: Sequence[str], dest: Path) -> tuple[Path, dict[str, Any]]:
    """Write to `dest` the records of `path` that hold every model of `trio` (cheap, mid,
    expensive recorded model keys), with `tiers` and `min_tier_correct` re-pointed at them;
    return the file and a summary for the report (the keys, the records kept per task).

    Everything downstream (cross-validation labels, replay, prices, scoring) then reads the
    trio as if it were the data's default one. ConfigError for a key no record holds.
    """
    keys = [k.strip() for k in trio]
    if len(keys) != len(TIER_KEYS) or not all(keys) or len(set(keys)) != len(keys):
        raise ConfigError(
            f"--trio needs {len(TIER_KEYS)} different model keys (cheap,mid,expensive), "
            f"not {','.join(trio)!r}"
        )
    seen: set[str] = set()
    kept: Counter[str] = Counter()
    with gzip.open(dest, "wt", encoding="utf-8") as out:
        for record in _trio_records(path, keys, seen):
            kept[str(record.get("task") or "all")] += 1
            out.write(json.dumps(record) + "\n")
    unknown = [k for k in keys if k not in seen]
    if unknown:
        raise ConfigError(
            f"--trio: no record holds model key(s) {unknown}; the data holds {sorted(seen)}"
        )
    if not kept:
        raise ConfigError(f"--trio: no record holds all of {keys}")
    return dest, {
        "models": dict(zip(TIER_KEYS, keys, strict=True)),
        "records_per_task": dict(sorted(kept.items())),
        "source_file": path.name,
        "source_sha256": file_sha256(path),
    }


def _trio_records(path: Path, keys: Sequence[str], seen: set[str]) -> Iterator[dict[str, Any]]:
    """The records holding every key, re-pointed; `seen` collects every model key met."""
    for record in iter_records(path):
        models = record.get("models") or {}
        seen.update(models)
        if not all(k in models for k in keys):
            continue
        trio = dict(zip(TIER_KEYS, keys, strict=True))
        correct = [bool(models[k].get("correct")) for k in keys]
        label = next((t for t, ok in zip(TIER_KEYS, correct, strict=True) if ok), "none")
        yield {**record, "tiers": trio, "min_tier_correct": label}
