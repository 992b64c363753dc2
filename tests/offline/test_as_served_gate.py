"""retrain's gate scores the candidate and the served bundle as served, on the same records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tierroute.offline.evaluation.as_served import evaluate_as_served
from tierroute.offline.evaluation.pipeline import Options
from tierroute.offline.retrain import evaluate_bundles, serves_cascade, split_records
from tierroute.outcomes import iter_records
from tierroute.settings import Settings

pytest_plugins = ["tests.offline.test_as_served"]


def _held_out(data: Path, dest: Path) -> tuple[set[str], Path]:
    """The gate's default held-out split of `data`, and a file of just those records."""
    _, held = split_records(list(iter_records(data)), 0.2)
    with gzip.open(dest, "wt", encoding="utf-8") as fh:
        for record in held:
            fh.write(json.dumps(record) + "\n")
    return {str(r["id"]) for r in held}, dest


def test_a_calibrated_bundle_is_gated_on_its_cascade(served_dir: Path) -> None:
    """A bundle shipping a Cascade calibration is compared by how its Cascade serves."""
    assert serves_cascade(served_dir)


def test_the_gate_figures_are_the_as_served_figures(
    probed_data: Path, served_dir: Path, tmp_path: Path
) -> None:
    """The gate's Cascade figures for a bundle equal `eval --as-served`'s default point on
    the same held-out records and ladder."""
    ids, held_file = _held_out(probed_data, tmp_path / "held.jsonl.gz")
    settings = Settings.from_env({})
    figures = evaluate_bundles(settings, probed_data, ids, {"current": served_dir}, cascade=True)
    report = evaluate_as_served(
        held_file, tmp_path / "out", settings, Options(model_dir=served_dir, prices="recorded")
    )
    served = report["strategies"][report["default"]]
    assert figures["current"].served_as == "cascade"
    assert figures["current"].quality == pytest.approx(served["quality"], abs=1e-6)
    assert figures["current"].cost_per_query_usd == pytest.approx(
        served["cost_per_query_usd"], rel=1e-6
    )
