"""`tierroute split`: a recorded-outcome file cut in two for honest as-served checks.

The product's own commands then train and calibrate a bundle on one part
(`model_export/build.py` or `tierroute train`, then `tierroute calibrate`) and
`tierroute eval --as-served` serves it on the other, which neither step saw. A record's
side is decided by its duplicate group (`dup_group`, else its id), hashed with the seed, so
MMLU-Pro duplicates never straddle the cut and the cut is the same on every run. With
`--task T` the held-out side is task T (and the training side everything else): a task the
bundle never saw. The parts are written as the shared data's format (gzip JSON lines), with
the source's prices file linked beside them so the recorded ladder reads the same prices.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.offline.evaluation.eval_data import PRICES_FILE
from tierroute.outcomes import file_sha256, iter_records

TRAIN_FILE = "train.jsonl.gz"
HOLDOUT_FILE = "holdout.jsonl.gz"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class SplitRule:
    """Which records go to the held-out side: a share of the duplicate groups, or tasks."""

    holdout_fraction: float = 0.0
    seed: int = 0
    # Hold out exactly these tasks (and train on every other); overrides the fraction.
    holdout_tasks: tuple[str, ...] = ()

    def check(self) -> None:
        """ConfigError for a rule that cannot split."""
        if not self.holdout_tasks and not 0 < self.holdout_fraction < 1:
            raise ConfigError("--holdout-fraction must be within (0, 1), or give --task")

    def held_out(self, record: dict[str, Any], position: int) -> bool:
        """Whether `record` (at `position` of its file) is on the held-out side."""
        if self.holdout_tasks:
            return str(record.get("task") or "all") in self.holdout_tasks
        group = str(record.get("dup_group") or record.get("id") or f"#{position}")
        digest = hashlib.blake2b(f"{self.seed}:{group}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.holdout_fraction

    def statement(self) -> str:
        """The rule in words, for split.json and reports."""
        if self.holdout_tasks:
            return f"held out: task {', '.join(self.holdout_tasks)}; trained on the rest"
        return (
            f"held out: {self.holdout_fraction:g} of the duplicate groups (dup_group, else "
            f"the record id), by a seeded hash (seed {self.seed})"
        )


def split_file(source: Path, out_dir: Path, rule: SplitRule) -> dict[str, Any]:
    """Write `out_dir`/train.jsonl.gz and holdout.jsonl.gz from `source` by `rule`, and
    split.json describing them; return that description."""
    rule.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter[str]] = {"train": Counter(), "holdout": Counter()}
    paths = {"train": out_dir / TRAIN_FILE, "holdout": out_dir / HOLDOUT_FILE}
    with (
        gzip.open(paths["train"], "wt", encoding="utf-8") as train,
        gzip.open(paths["holdout"], "wt", encoding="utf-8") as holdout,
    ):
        for position, record in enumerate(iter_records(source)):
            side = "holdout" if rule.held_out(record, position) else "train"
            (holdout if side == "holdout" else train).write(json.dumps(record) + "\n")
            counts[side][str(record.get("task") or "all")] += 1
    for side, found in counts.items():
        if not found:
            raise ConfigError(
                f"{source}: the split leaves no records to {side} on ({rule.statement()})"
            )
    prices = source.parent / PRICES_FILE
    link = out_dir / PRICES_FILE
    if prices.is_file() and not link.exists():
        link.symlink_to(prices.resolve())
    description = {
        "source": source.name,
        "source_sha256": file_sha256(source),
        "rule": rule.statement(),
        "files": {side: path.name for side, path in paths.items()},
        "records_per_task": {side: dict(sorted(c.items())) for side, c in counts.items()},
        "records": {side: sum(c.values()) for side, c in counts.items()},
    }
    (out_dir / SPLIT_FILE).write_text(
        json.dumps(description, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return description


def tasks_of(source: Path) -> list[str]:
    """The tasks of a recorded-outcome file, sorted."""
    return sorted({str(r.get("task") or "all") for r in iter_records(source)})


def parse_tasks(raw: Sequence[str] | None) -> tuple[str, ...]:
    """Task names from repeated or comma-separated options."""
    return tuple(t.strip() for item in raw or () for t in item.split(",") if t.strip())
