"""How well the prompt's shape tells where the agreement checks can apply.

    python model_export/applicability.py --data ../shared/data/dev.jsonl.gz \
        --data ../shared/data/ood/arena_bench_v1.jsonl.gz [--json]

For every file and task (`task_type` for the open-ended set), the share of prompts
`tierroute.routing.agreement_applies` accepts, and, among the prompts it accepts and those it
refuses, the share of recorded answers (every recorded model's) that state a final answer
`providers.final_answer` can compare: what an agreement check needs. Reads prompts and
responses only, never `correct`, `score` or `reference_answer`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tierroute.providers import final_answer
from tierroute.routing import agreement_applies


def measure(path: Path) -> dict[str, Any]:
    """Per task: prompts, the share accepted, and the answers' final-answer rates."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            group = record["task"] if record.get("split") == "dev" else record["task_type"]
            applies = agreement_applies(record["prompt"])
            answers = [m.get("response") or "" for m in record["models"].values()]
            stated = sum(1 for a in answers if final_answer(a))
            row = counts[group]
            row[0] += 1
            row[1] += applies
            offset = 2 if applies else 4
            row[offset] += stated
            row[offset + 1] += len(answers)
    out = {}
    for group, (n, accepted, stated_in, total_in, stated_out, total_out) in sorted(counts.items()):
        out[group] = {
            "prompts": n,
            "agreement_applies": round(accepted / n, 4),
            "final_answer_rate_where_it_applies": round(stated_in / total_in, 4)
            if total_in
            else None,
            "final_answer_rate_elsewhere": round(stated_out / total_out, 4) if total_out else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the measure for every --data file."""
    parser = argparse.ArgumentParser(prog="model_export/applicability.py")
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {path.name: measure(path) for path in args.data}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, groups in report.items():
        for group, row in groups.items():
            print(
                f"{name:28} {group:12} n={row['prompts']:5}  applies {row['agreement_applies']:.3f}"
                f"  final answers where it applies {row['final_answer_rate_where_it_applies']}"
                f", elsewhere {row['final_answer_rate_elsewhere']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
