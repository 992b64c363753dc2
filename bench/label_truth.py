"""How far exported labels are from the truth: each tier's labelled pass rate, its true
accuracy and the share of labels that agree with the recorded `correct`, on the questions of
a `tierroute export --labeled` file joined to the recorded data by question text.

    .venv/bin/python bench/label_truth.py LABELS.jsonl.gz [--data ../shared/data/dev.jsonl.gz]

Ground truth is read here only, to grade the labels; nothing it reads reaches a label.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Print one JSON object: per tier, labelled rate, true rate, agreement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev.jsonl.gz"
    )
    args = parser.parse_args()
    from tierroute.outcomes import iter_records

    truth: dict[str, dict[str, Any]] = {}
    for record in iter_records(args.data):
        for text in (record.get("prompt_sent"), record["prompt"]):
            if text:
                truth.setdefault(text.strip(), record)
    counts: dict[str, list[int]] = {}
    joined = 0
    for labelled in iter_records(args.labels):
        record = truth.get(str(labelled["prompt"]).strip())
        if record is None:
            continue
        joined += 1
        for tier in ("cheap", "mid", "expensive"):
            said = int(labelled["models"][labelled["tiers"][tier]]["correct"])
            real = int(record["models"][record["tiers"][tier]]["correct"])
            row = counts.setdefault(tier, [0, 0, 0])
            row[0] += said
            row[1] += real
            row[2] += said == real
    doc = {
        "questions": joined,
        "tiers": {
            tier: {
                "labelled_pass_rate": round(said / joined, 4),
                "true_accuracy": round(real / joined, 4),
                "label_agrees_with_truth": round(agree / joined, 4),
            }
            for tier, (said, real, agree) in counts.items()
        },
    }
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
