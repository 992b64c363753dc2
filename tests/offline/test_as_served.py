"""`tierroute eval --as-served`: the bundle's own files answer every record, as a server does."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings, running_server
from tierroute.errors import ConfigError
from tierroute.model.bundle import THRESHOLDS_FILE
from tierroute.offline.cli.modelling import add_eval_parser
from tierroute.offline.evaluation.as_served import (
    evaluate_as_served,
    served_bundle,
    served_strategies,
)
from tierroute.offline.evaluation.eval_data import load_eval_data
from tierroute.offline.evaluation.harness import run_strategies
from tierroute.offline.evaluation.pipeline import Options, calibrate
from tierroute.offline.evaluation.strategies import eval_settings
from tierroute.offline.evaluation.summary import REPORT_FILE, SUMMARY_FILE
from tierroute.offline.training.trainer import TrainOptions, train_bundle
from tierroute.outcomes import iter_records
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb

FOLDS = 3
POINTS = ("parity", "q95", "third_cost")
PROBE_MODEL = "gpt-4o-mini-2024-07-18"


def probed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` in which the agreement probe's replay model answers as the cheap tier does
    (dev's records hold it too)."""
    for record in records:
        record["models"][PROBE_MODEL] = dict(record["models"][record["tiers"]["cheap"]])
    return records


@pytest.fixture(scope="module")
def probed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 fixture records with the probe's model beside the tiers'."""
    path = tmp_path_factory.mktemp("probed") / "probed.jsonl.gz"
    return write_dataset(path, probed(make_records(300, claude=True)))


def _settings(environ: dict[str, str] | None = None) -> Settings:
    return Settings.from_env(environ or {})


@pytest.fixture(scope="module")
def served_dir(probed_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle as `make model` builds it (train, then calibrate the value policy)."""
    bundle = tmp_path_factory.mktemp("served") / "bundle"
    train_bundle(probed_data, bundle, TrainOptions(folds=FOLDS, progress=False))
    calibrate(
        probed_data,
        bundle / THRESHOLDS_FILE,
        _settings(),
        None,
        Options(folds=FOLDS, model_dir=bundle),
        report_path=bundle.parent / "slices.json",
    )
    return bundle


@pytest.fixture(scope="module")
def served_report(
    probed_data: Path, served_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """One as-served evaluation of the fixture, with the middle tier as the reference."""
    out = tmp_path_factory.mktemp("as-served")
    settings = _settings({"TIERROUTE_ROUTING_REFERENCE_TIER": "mid"})
    report = evaluate_as_served(probed_data, out, settings, Options(model_dir=served_dir))
    return report, out


def test_every_operating_point_is_served_beside_the_baselines(
    served_report: tuple[dict[str, Any], Path],
) -> None:
    """The report holds the three always-one-tier baselines and each point the bundle ships."""
    report, _ = served_report
    assert set(report["strategies"]) == {
        "always_cheap",
        "always_mid",
        "always_expensive",
        *(f"served@{p}" for p in POINTS),
    }
    assert report["default"] == "served@parity"
    assert report["evaluation"] == "as_served"
    assert report["figures"].startswith("as served")


def test_the_figures_are_scored_as_served_by_the_bundle_version(
    served_report: tuple[dict[str, Any], Path], served_dir: Path
) -> None:
    """The report names the bundle version a server loading the directory serves."""
    report, _ = served_report
    metadata = json.loads((served_dir / "metadata.json").read_text())
    assert report["bundle"]["version"] == metadata["model_version"]
    assert set(report["bundle"]["price_per_correct_usd"]) == set(POINTS)


async def test_each_record_is_answered_as_the_real_server_answers_it(
    probed_data: Path, served_dir: Path
) -> None:
    """The harness's as-served answer of a record starts, ends and costs as the server's
    Cascade RPC does with the same bundle and replayed answers."""
    settings = make_settings(
        {
            "TIERROUTE_MODEL_DIR": str(served_dir),
            "TIERROUTE_REPLAY_DATA": str(probed_data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
        }
    )
    data = load_eval_data(probed_data, limit=40)
    played = eval_settings(settings, data, "config")
    bundle = served_bundle(served_dir, played)
    strategies = served_strategies(played, bundle)
    # The harness runs its own virtual-time loop: off this test's loop.
    outcomes = await asyncio.to_thread(run_strategies, data, strategies)
    names = [t.name for t in settings.tiers]
    for strategy in strategies:
        point = strategy.name.split("@")[1]
        # A server per point: a request id (the record's, as the harness sends) is used once.
        async with running_server(settings, environ={}) as running:
            for record, outcome in zip(data.records, outcomes[strategy.name], strict=True):
                response = await running.stub.Cascade(
                    pb.CascadeRequest(
                        query=record.prompt,
                        request_id=record.id,
                        policy=pb.RoutingPolicy(operating_point=point),
                    )
                )
                assert response.route.tier.name == names[outcome.start_tier], record.id
                assert response.tier.name == names[outcome.final_tier], record.id
                assert response.total_cost_usd == pytest.approx(outcome.cost_usd), record.id


def test_each_slice_is_compared_with_top_mid_and_the_reference_tier(
    served_report: tuple[dict[str, Any], Path], probed_data: Path
) -> None:
    """Per task, every strategy carries its figures against always-top, always-mid and the
    configured reference tier's baseline (here the middle tier)."""
    report, _ = served_report
    tasks = {str(r["task"]) for r in iter_records(probed_data)}
    assert report["reference_tier"] == {"tier": "mid", "baseline": "always_mid"}
    for entry in report["strategies"].values():
        assert set(entry["per_task"]) == tasks
        assert entry["versus"]["reference"] == entry["versus"]["always_mid"]
        for figures in entry["per_task"].values():
            assert set(figures["versus"]) == {"always_expensive", "always_mid", "reference"}
    mid = report["strategies"]["always_mid"]
    assert mid["versus"]["always_mid"]["quality_diff"] == 0
    assert mid["versus"]["always_mid"]["times_cheaper"] == 1


def test_the_goals_are_stated_for_the_default_and_q95(
    served_report: tuple[dict[str, Any], Path],
) -> None:
    """The goals read the default point within 0.5 points of always-top at >= 2x cheaper,
    and q95 at >= 95 % of its quality at >= 4x cheaper, each with its noise."""
    report, _ = served_report
    goals = report["goals"]
    assert goals["default"]["strategy"] == "served@parity"
    assert goals["q95"]["strategy"] == "served@q95"
    for goal in goals.values():
        assert goal["met"] == (goal["quality_met"] and goal["cost_met"])
        assert "quality_diff_se" in goal
        assert "as served" in goal["statement"]


def test_report_and_summary_are_written(served_report: tuple[dict[str, Any], Path]) -> None:
    """report.json is the returned report; summary.md labels its figures as served."""
    report, out = served_report
    assert json.loads((out / REPORT_FILE).read_text()) == json.loads(json.dumps(report))
    summary = (out / SUMMARY_FILE).read_text()
    assert summary.startswith("**As served**")
    assert "`served@q95`" in summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierroute")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_the_cli_prints_the_as_served_tables(
    probed_data: Path, served_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute eval --as-served` exits 0 and prints figures labelled as served."""
    args = _parser().parse_args(
        [
            *("eval", "--as-served", "--data", str(probed_data), "--limit", "60"),
            *("--out", str(tmp_path), "--model-dir", str(served_dir), "--quiet"),
        ]
    )
    assert args.func(args, _settings(), {}) == 0
    err = capsys.readouterr().err
    assert "**As served**" in err
    assert json.loads((tmp_path / REPORT_FILE).read_text())["n"] == 60


def test_a_directory_without_a_bundle_is_a_clear_error(probed_data: Path, tmp_path: Path) -> None:
    """--as-served on a directory holding no bundle names the directory."""
    with pytest.raises(ConfigError, match="needs a model bundle"):
        evaluate_as_served(probed_data, tmp_path, _settings(), Options(model_dir=tmp_path))
