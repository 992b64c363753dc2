"""`tierroute split` and `tierroute transfer`: bundles served on records they never saw."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tierroute.errors import ConfigError
from tierroute.offline.cli.transfer import add_split_parser, add_transfer_parser
from tierroute.offline.evaluation.split import SplitRule, split_file
from tierroute.offline.evaluation.transfer import TRANSFER_FILE
from tierroute.settings import Settings


def _read(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _grouped(tmp_path: Path) -> Path:
    records = make_records(120)
    for i, record in enumerate(records):
        record["dup_group"] = f"g{i // 4}"
    return write_dataset(tmp_path / "grouped.jsonl.gz", records)


def test_a_fraction_split_keeps_each_duplicate_group_on_one_side(tmp_path: Path) -> None:
    """Every dup_group lands wholly in the training part or wholly in the held-out part."""
    split_file(_grouped(tmp_path), tmp_path / "cut", SplitRule(holdout_fraction=0.3, seed=1))
    train = {r["dup_group"] for r in _read(tmp_path / "cut" / "train.jsonl.gz")}
    held = {r["dup_group"] for r in _read(tmp_path / "cut" / "holdout.jsonl.gz")}
    assert train
    assert held
    assert not train & held
    assert len(train | held) == 30


def test_a_task_split_holds_out_exactly_that_task(tmp_path: Path) -> None:
    """With a task named, the held-out part is that task and the training part the rest."""
    description = split_file(
        _grouped(tmp_path), tmp_path / "cut", SplitRule(holdout_tasks=("toy_math",))
    )
    assert {r["task"] for r in _read(tmp_path / "cut" / "holdout.jsonl.gz")} == {"toy_math"}
    assert "toy_math" not in {r["task"] for r in _read(tmp_path / "cut" / "train.jsonl.gz")}
    assert description["records"] == {"train": 80, "holdout": 40}


def test_a_split_that_leaves_a_side_empty_is_refused(tmp_path: Path) -> None:
    """Holding out a task the file lacks leaves nothing to evaluate: a clear error."""
    with pytest.raises(ConfigError, match="no records to holdout"):
        split_file(_grouped(tmp_path), tmp_path / "cut", SplitRule(holdout_tasks=("absent",)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierroute")
    sub = parser.add_subparsers(dest="command", required=True)
    add_split_parser(sub)
    add_transfer_parser(sub)
    return parser


def test_split_refuses_a_fraction_outside_zero_to_one(tmp_path: Path) -> None:
    """`tierroute split --holdout-fraction 1.5` exits 2 instead of writing an empty part."""
    args = _parser().parse_args(
        [
            *("split", "--data", str(_grouped(tmp_path)), "--out", str(tmp_path / "cut")),
            *("--holdout-fraction", "1.5"),
        ]
    )
    assert args.func(args, Settings.from_env({}), {}) == 2


def test_transfer_serves_a_bundle_trained_without_the_task_on_it(tmp_path: Path) -> None:
    """transfer trains and calibrates without the task, serves the bundle on it as-is, and
    writes one table row per operating point with the baselines beside it."""
    data = write_dataset(tmp_path / "tiny.jsonl.gz", make_records(150))
    out = tmp_path / "transfer"
    args = _parser().parse_args(
        [
            *("transfer", "--data", str(data), "--out", str(out), "--task", "toy_math"),
            *("--folds", "3", "--workers", "1", "--quiet"),
        ]
    )
    assert args.func(args, Settings.from_env({}), {}) == 0
    document = json.loads((out / TRANSFER_FILE).read_text())
    (row,) = document["rows"]
    assert row["part"] == "toy_math"
    assert row["n"] == 50
    assert row["trained_on"] == 100
    split = json.loads((out / "toy_math" / "split.json").read_text())
    assert "toy_math" not in split["records_per_task"]["train"]
    metadata = json.loads((out / "toy_math" / "bundle" / "metadata.json").read_text())
    assert row["bundle"] == metadata["model_version"]
    assert set(row["baselines"]) == {"always_cheap", "always_mid", "always_expensive"}
    assert row["default"] in row["served"]
    assert document["figures"].startswith("as served")


def test_a_part_that_cannot_be_served_is_a_row_that_says_why(tmp_path: Path) -> None:
    """A part the commands cannot train, calibrate or serve (here: a task the file lacks)
    is written as a row with its reason, and the run still writes the table."""
    data = write_dataset(tmp_path / "tiny.jsonl.gz", make_records(30))
    out = tmp_path / "transfer"
    args = _parser().parse_args(
        ["transfer", "--data", str(data), "--out", str(out), "--task", "absent", "--quiet"]
    )
    assert args.func(args, Settings.from_env({}), {}) == 0
    (row,) = json.loads((out / TRANSFER_FILE).read_text())["rows"]
    assert row["part"] == "absent"
    assert "no records to holdout" in row["error"]
