"""Offline evaluation and calibration: report schema, orderings, honesty and reproducibility."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures import make_records, write_dataset
from tierroute.cascade.calibrated import apply_cascade
from tierroute.errors import ConfigError, RateLimited
from tierroute.model.bundle import THRESHOLDS_FILE, Bundle
from tierroute.model.classifier import RouterModel
from tierroute.model.value import ValueModel
from tierroute.offline.cli.modelling import add_calibrate_parser, add_eval_parser
from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation.crossval import CrossValidation, cross_validate
from tierroute.offline.evaluation.eval_data import EvalData, load_eval_data, load_store
from tierroute.offline.evaluation.harness import run_strategies
from tierroute.offline.evaluation.pipeline import (
    Options,
    calibrate,
    classifier_target,
    evaluate,
    priced,
    shipped_target,
    value_estimates,
)
from tierroute.offline.evaluation.scoring import GroundTruth
from tierroute.offline.evaluation.strategies import (
    baseline_strategies,
    eval_settings,
    random_strategy,
    routed_strategies,
)
from tierroute.offline.evaluation.summary import REPORT_FILE, strategy_metrics
from tierroute.offline.evaluation.vclock import VirtualTimeLoop
from tierroute.offline.training.calibrate import Target
from tierroute.offline.training.trainer import TrainOptions, train_bundle
from tierroute.outcomes import file_sha256
from tierroute.providers.base import Message
from tierroute.providers.prompts import JUDGE_SYSTEM, JUDGE_TOOL
from tierroute.providers.replay.faults import FAULT_HEADER
from tierroute.providers.replay.messages import ReplayEngine
from tierroute.providers.replay.provider import ReplayProvider
from tierroute.routing.plan import ACTIONS
from tierroute.routing.policy import RiskThresholds
from tierroute.routing.router import RouteQuery, Router
from tierroute.settings import ReplayConfig, Settings, TierConfig

FOLDS = 3
STRATEGIES = {
    "always_cheap",
    "always_mid",
    "always_expensive",
    "random_at_equal_cost",
    "oracle",
    "seed_recipe",
    "heuristic",
    "classifier",
    "cascade",
    "cascade_speculative",
    "self_routing",
    "shipped",
    "shipped_cv",
}
ENTRY_KEYS = {
    "quality",
    "cost_per_query_usd",
    "judge_cost_per_query_usd",
    "tier_mix",
    "escalation_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "per_task",
}
GROUND_TRUTH_FIELDS = ("correct", "reference_answer", "min_tier_correct")
PACKAGE = Path(__file__).resolve().parents[2] / "service" / "tierroute"


def _settings() -> Settings:
    # Never the process environment: the bundled configuration only.
    return Settings.from_env({})


@pytest.fixture(scope="module")
def bundle_dir(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle trained on the 300-record fixture, as `make model` would."""
    out = tmp_path_factory.mktemp("bundle")
    train_bundle(small_data, out, TrainOptions(folds=FOLDS, progress=False))
    return out


@pytest.fixture(scope="module")
def evaluated(
    small_data: Path, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """One evaluation of the fixture file, in-process, and the directory it wrote."""
    out = tmp_path_factory.mktemp("eval")
    report = evaluate(small_data, out, _settings(), Options(folds=FOLDS, model_dir=bundle_dir))
    return report, out


@pytest.fixture(scope="module")
def report(evaluated: tuple[dict[str, Any], Path]) -> dict[str, Any]:
    """The report of that evaluation."""
    return evaluated[0]


@pytest.fixture(scope="module")
def cv(small_data: Path, bundle_dir: Path) -> tuple[EvalData, CrossValidation]:
    """The fixture's evaluation data and its cross-validation fold models."""
    from tierroute.offline.evaluation.crossval import cross_validate

    data = load_eval_data(small_data)
    return data, cross_validate(
        data, k=FOLDS, target=Target("max_cost_ratio", 1 / 3), prefix_chars=4096
    )


def test_report_has_the_documented_schema(report: dict[str, Any]) -> None:
    """report.json carries n, data_sha256, strategies with every schema key, and default."""
    assert report["n"] == 300
    assert re.fullmatch(r"[0-9a-f]{64}", report["data_sha256"])
    assert report["default"] == "shipped"
    for name, entry in report["strategies"].items():
        assert set(entry) >= ENTRY_KEYS, name
        assert set(entry["tier_mix"]) == {"cheap", "mid", "expensive"}
        assert sum(entry["tier_mix"].values()) == pytest.approx(1.0, abs=1e-5)
        assert set(entry["per_task"]) == {"toy_code", "toy_facts", "toy_math"}
        for task in entry["per_task"].values():
            assert set(task) == {"quality", "cost_per_query_usd"}


def test_report_states_how_judges_are_billed(report: dict[str, Any]) -> None:
    """The report records the judge billing its figures use: the honest default, reasoning."""
    assert report["simulation"]["judge_billing"] == "reasoning"


def test_report_lists_every_strategy(report: dict[str, Any]) -> None:
    """Every strategy of the issue, the shipped one and its cross-fitted twin are reported."""
    assert set(report["strategies"]) == STRATEGIES


def test_report_compares_every_strategy_with_always_expensive(report: dict[str, Any]) -> None:
    """Cost ratio, quality difference and gap recovered are 1, 0, 1 for always-expensive."""
    strategies = report["strategies"]
    top, cheap = strategies["always_expensive"], strategies["always_cheap"]
    assert top["cost_ratio_vs_always_expensive"] == 1.0
    assert top["quality_diff_vs_always_expensive"] == 0.0
    assert top["gap_recovered"] == 1.0
    assert cheap["gap_recovered"] == 0.0
    shipped = strategies["shipped"]
    expected = (shipped["quality"] - cheap["quality"]) / (top["quality"] - cheap["quality"])
    assert shipped["gap_recovered"] == pytest.approx(expected, abs=1e-5)


def test_random_baseline_spends_what_the_shipped_strategy_spends(report: dict[str, Any]) -> None:
    """`random_at_equal_cost` matches the shipped strategy's cost per query, not its tier mix."""
    s = report["strategies"]
    shipped, random = s["shipped"]["cost_per_query_usd"], s["random_at_equal_cost"]
    step = s["always_expensive"]["cost_per_query_usd"] * 2 / report["n"]
    assert abs(random["cost_per_query_usd"] - shipped) <= step


def test_random_baseline_moves_records_up_only_within_the_budget() -> None:
    """The cost-matched draw mixes the two tiers around the target at random and spends at most
    the target, within one record's step of it."""
    settings = _settings()
    n = 200
    rng = np.random.default_rng(3)
    cheap = rng.uniform(0.001, 0.002, n)
    costs = [cheap, cheap * 10, cheap * 60]
    ids = [f"r{i}" for i in range(n)]
    target = float(np.mean(costs[1]) + np.mean(costs[2])) / 2
    strategy = random_strategy(settings, ids, costs, target, seed=1)
    names = [t.name for t in settings.tiers]
    chosen = [names.index(strategy.start_tiers[f"r{i}"]) for i in range(n)]
    spent = float(np.mean([costs[t][i] for i, t in enumerate(chosen)]))
    assert spent <= target
    assert target - spent <= float(np.max(costs[2] - costs[1])) / n
    assert set(chosen) == {1, 2}
    again = random_strategy(settings, ids, costs, target, seed=1)
    assert again.start_tiers == strategy.start_tiers


def test_oracle_quality_is_at_least_every_strategys(report: dict[str, Any]) -> None:
    """No strategy answers more queries correctly than the cheapest-correct-tier oracle."""
    oracle = report["strategies"]["oracle"]["quality"]
    assert all(s["quality"] <= oracle for s in report["strategies"].values())


def test_always_expensive_costs_more_than_always_cheap(report: dict[str, Any]) -> None:
    """The top tier costs more per query than the cheap one, and the oracle less than the top."""
    s = report["strategies"]
    assert s["always_expensive"]["cost_per_query_usd"] > s["always_mid"]["cost_per_query_usd"]
    assert s["always_mid"]["cost_per_query_usd"] > s["always_cheap"]["cost_per_query_usd"]
    assert s["oracle"]["cost_per_query_usd"] < s["always_expensive"]["cost_per_query_usd"]


def test_judge_calls_are_costed_and_one_call_strategies_have_none(
    report: dict[str, Any],
) -> None:
    """The cascade's judge cost is positive and inside its total; one-call strategies pay none."""
    s = report["strategies"]
    assert 0 < s["cascade"]["judge_cost_per_query_usd"] < s["cascade"]["cost_per_query_usd"]
    for name in ("always_cheap", "oracle", "classifier", "heuristic", "seed_recipe"):
        assert s[name]["judge_cost_per_query_usd"] == 0.0, name
        assert s[name]["escalation_rate"] == 0.0, name


def test_latency_is_simulated_from_the_replay_latency_model(report: dict[str, Any]) -> None:
    """Always-cheap latency is the cheap tier's time to first token plus its output time."""
    config = ReplayConfig()
    cheap = report["strategies"]["always_cheap"]
    # Fixture answers on the cheap tier have 40 output tokens at 150 tokens/s after 0.4 s.
    expected_ms = (config.ttft_s[0] + 40 / config.tokens_per_s[0]) * 1000
    assert cheap["p50_latency_ms"] == pytest.approx(expected_ms, abs=0.1)


def test_time_to_first_token_is_measured_streamed_against_unary(report: dict[str, Any]) -> None:
    """The shipped strategy streamed: first tokens never later, whole answers as long."""
    section = report["time_to_first_token"]
    assert section["strategy"] == "shipped"
    groups = section["all"], section["escalated"], section["not_escalated"]
    assert groups[0]["n"] == report["n"] == groups[1]["n"] + groups[2]["n"]
    assert groups[1]["n"] > 0
    for group in groups:
        for p in ("p50_ms", "p95_ms"):
            assert group["stream"][p] <= group["unary"][p]
            assert group["stream_total"][p] == pytest.approx(group["unary"][p], abs=0.2)
    # Unjudged answers stream from their first delta: well before the whole answer.
    assert section["all"]["ratio_p50"] < 1


def test_report_and_plot_are_written(evaluated: tuple[dict[str, Any], Path]) -> None:
    """DIR/report.json holds the returned report and DIR/frontier.png is a PNG image."""
    report, out = evaluated
    assert json.loads((out / REPORT_FILE).read_text()) == report
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_tables_quote_the_report(evaluated: tuple[dict[str, Any], Path]) -> None:
    """DIR/summary.md has one row per strategy with the report's own figures."""
    report, out = evaluated
    summary = (out / "summary.md").read_text()
    for name, s in report["strategies"].items():
        row = next(line for line in summary.splitlines() if f"`{name}`" in line)
        assert f"{s['quality']:.4f}" in row
        assert f"{s['cost_per_query_usd']:.6f}" in row


def test_report_states_the_cross_validation(report: dict[str, Any]) -> None:
    """The report says how many folds, how they were grouped and which thresholds per fold."""
    assert report["cv"]["folds"] == FOLDS
    assert "dup_group" in report["cv"]["grouping"]
    assert len(report["cv"]["classifier_thresholds"]["per_fold"]) == FOLDS
    assert len(report["cv"]["shipped_procedure"]["per_fold"]) == FOLDS


def test_output_is_identical_for_a_fixed_seed_and_any_worker_count(
    evaluated: tuple[dict[str, Any], Path], small_data: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    """A second run with two worker processes writes byte-identical report.json."""
    _, first = evaluated
    evaluate(
        small_data, tmp_path, _settings(), Options(folds=FOLDS, model_dir=bundle_dir, workers=2)
    )
    assert (tmp_path / REPORT_FILE).read_bytes() == (first / REPORT_FILE).read_bytes()


def _strip_ground_truth(source: Path, target: Path) -> Path:
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    for record in records:
        record.pop("reference_answer", None)
        record.pop("min_tier_correct", None)
        for outcome in record["models"].values():
            outcome.pop("correct", None)
    return write_dataset(target, records)


def test_strategies_answer_the_same_without_ground_truth(
    cv: tuple[EvalData, CrossValidation], tmp_path: Path
) -> None:
    """With correct, reference_answer and min_tier_correct removed, every answer is the same."""
    data, folds = cv
    stripped = load_eval_data(_strip_ground_truth(data.path, tmp_path / "stripped.jsonl.gz"))
    settings = eval_settings(_settings(), data)
    strategies = [*baseline_strategies(settings), *routed_strategies(settings, data, folds)]
    with_truth = run_strategies(data, strategies, folds=folds.fold_of)
    without = run_strategies(stripped, strategies, folds=folds.fold_of)
    assert without == with_truth


def test_scoring_is_a_separate_step_that_needs_the_ground_truth(
    small_data: Path, tmp_path: Path
) -> None:
    """Ground truth loads only for scoring, and a file without it cannot be scored."""
    stripped = _strip_ground_truth(small_data, tmp_path / "stripped.jsonl.gz")
    with pytest.raises(ConfigError, match="no ground truth"):
        GroundTruth.load(stripped)
    assert GroundTruth.load(small_data).min_tier


@pytest.mark.parametrize(
    "module",
    [
        "offline/evaluation/harness.py",
        "offline/evaluation/eval_data.py",
        "offline/evaluation/strategies.py",
        "offline/evaluation/vclock.py",
        "providers/replay/provider.py",
    ],
)
def test_answering_code_never_names_ground_truth_fields(module: str) -> None:
    """The modules that answer queries do not mention any ground-truth field."""
    source = (PACKAGE / module).read_text(encoding="utf-8")
    for name in GROUND_TRUTH_FIELDS:
        assert f'"{name}"' not in source, name
        assert f"'{name}'" not in source, name
    assert "reference_answer" not in source


def test_a_fold_scorer_refuses_records_of_other_folds(cv: tuple[EvalData, CrossValidation]) -> None:
    """Fold 0's out-of-fold scorer cannot route a record that fold 0's model trained on."""
    data, folds = cv
    scorer = folds.scorer(0, data, RiskThresholds((0.1, 0.3)))
    own = next(r for r in data.records if folds.fold_of[r.id] == 0)
    other = next(r for r in data.records if folds.fold_of[r.id] == 1)
    assert len(scorer.predict_proba(own.prompt)) == 3
    with pytest.raises(ConfigError, match="not one of the fold's held-out records"):
        scorer.predict_proba(other.prompt)


def test_table_figures_equal_an_engine_run_of_the_same_configuration(
    cv: tuple[EvalData, CrossValidation],
) -> None:
    """Calibration's table lookups predict exactly what the cascade engine then does."""
    data, folds = cv
    settings = eval_settings(_settings(), data)
    truth = GroundTruth.load(data.path)
    tables = cal.build_tables(data, settings, truth)
    inputs, fold_array = cal.fold_inputs(folds, data, tables)
    target = cal.CalibrationTarget("min_quality", 0.9, relative=True)
    fit = cal.cross_fit(inputs, fold_array, target)
    predicted = cal.figures(inputs, fit.columns, np.ones(len(data), dtype=bool), ["c", "m", "e"])
    tuned = cal.tuned_strategy(
        "tuned", "under test", settings=settings, data=data, cv=folds, fit=fit
    )
    outcomes = run_strategies(data, [tuned], folds=folds.fold_of)["tuned"]
    actual = strategy_metrics(outcomes, data, truth, ["c", "m", "e"])
    for key in ("quality", "cost_per_query_usd", "judge_cost_per_query_usd", "p95_latency_ms"):
        assert actual[key] == predicted[key], key


def test_value_policy_table_figures_equal_an_engine_run(
    cv: tuple[EvalData, CrossValidation],
) -> None:
    """With the value policy, the table lookups also predict exactly what the engine does:
    the router's plan (start tier and judging) through the harness lands on the same column.
    """
    data, folds = cv
    settings = eval_settings(_settings(), data)
    truth = GroundTruth.load(data.path)
    tables = cal.build_tables(data, settings, truth)
    value = priced(value_estimates(data, folds, tables, Options(folds=FOLDS)), settings)
    inputs, fold_array = cal.fold_inputs(folds, data, tables, value)
    target = cal.CalibrationTarget("max_cost_per_query", 0.5, relative=True)
    fit = cal.cross_fit(inputs, fold_array, target)
    assert all(p.policy == "value" for p in fit.params)
    # More than one action is taken, or the comparison would prove little.
    assert len(set(fit.columns.tolist())) > 1
    predicted = cal.figures(inputs, fit.columns, np.ones(len(data), dtype=bool), ["c", "m", "e"])
    tuned = cal.tuned_strategy(
        "tuned", "under test", settings=settings, data=data, cv=folds, fit=fit, inputs=inputs
    )
    outcomes = run_strategies(data, [tuned], folds=folds.fold_of)["tuned"]
    actual = strategy_metrics(outcomes, data, truth, ["c", "m", "e"])
    for key in ("quality", "cost_per_query_usd", "judge_cost_per_query_usd", "p95_latency_ms"):
        assert actual[key] == predicted[key], key


@pytest.fixture(scope="module")
def trained_thresholds(bundle_dir: Path) -> dict[str, Any]:
    """The thresholds file as training wrote it, before any calibration."""
    document: dict[str, Any] = json.loads((bundle_dir / THRESHOLDS_FILE).read_text())
    return document


@pytest.fixture(scope="module")
def calibrated(
    small_data: Path, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]]:
    """Calibrate toward half of always-expensive's cost, into a copy of the bundle."""
    bundle = tmp_path_factory.mktemp("calibrated") / "bundle"
    shutil.copytree(bundle_dir, bundle)
    target = cal.CalibrationTarget.parse("max_cost_per_query", "0.5x")
    result = calibrate(
        small_data,
        bundle / THRESHOLDS_FILE,
        _settings(),
        target,
        Options(folds=FOLDS, model_dir=bundle),
        report_path=bundle.parent / "slices.json",
    )
    slices = json.loads((bundle.parent / "slices.json").read_text())
    return target, bundle, result.thresholds, slices


def test_calibrate_writes_thresholds_the_router_loads(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """The thresholds file calibrate writes into a bundle loads, routes and configures."""
    target, bundle, thresholds, _ = calibrated
    model = RouterModel.load(bundle, 3)
    assert list(model.thresholds.risk) == thresholds["risk"]
    assert model.cascade_thresholds is not None
    assert list(model.cascade_thresholds.risk) == thresholds["cascade"]["risk"]
    decision = Router(_settings(), model).route(RouteQuery(text="Question 1: add the apples?"))
    assert decision.tier.name in ("cheap", "mid", "expensive")
    document = json.loads((bundle / THRESHOLDS_FILE).read_text())
    cascade = apply_cascade(_settings().cascade, document)
    assert cascade.speculative_bound == document["cascade"]["speculative_bound"]
    assert shipped_target(Bundle.read(bundle)) == (target, cal.DEFAULT_SPECULATION_COST_SHARE)


def test_calibrate_ships_the_value_policy_beside_the_thresholds(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """By default calibrate fits the value model, writes value.onnx into the bundle, and
    the thresholds file names it with its hash and the searched price.
    """
    _, bundle, thresholds, _ = calibrated
    cascade = thresholds["cascade"]
    assert cascade["policy"] == "value"
    section = cascade["value"]
    assert (bundle / section["model"]).is_file()
    assert section["sha256"] == file_sha256(bundle / section["model"])
    assert section["price_per_correct_usd"] > 0
    assert section["parity"]["max_abs_diff_p_correct"] < 1e-4
    assert all("price_per_correct_usd" in fold for fold in thresholds["calibration"]["per_fold"])
    # The named points and the target given (`custom`, served by default), each with its
    # held-out figures, and the calibration data they can be solved again from.
    assert list(section["operating_points"]) == ["parity", "q95", "third_cost", "custom"]
    assert section["default_operating_point"] == "custom"
    custom = section["operating_points"]["custom"]
    assert custom["price_per_correct_usd"] == section["price_per_correct_usd"]
    assert custom["held_out"]["cost_ratio_vs_always_expensive"] <= 0.5 + 1e-9
    assert section["prices"]["output_usd_per_mtok"] == [5.0, 15.0, 25.0]
    data_file = bundle / section["calibration_data"]["file"]
    assert section["calibration_data"]["sha256"] == file_sha256(data_file)
    loaded = ValueModel.load(bundle, section, n_tiers=3, prefix_chars=4096, where="test")
    assert loaded.plan("Question 1: add the apples?").action in ACTIONS
    assert loaded.points == {
        name: entry["price_per_correct_usd"] for name, entry in section["operating_points"].items()
    }


def test_calibrate_lists_every_fixed_setting_overall_and_per_task(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """The file shows what each of the nine settings does, so the policy's trade-offs can be
    reviewed; always-top is the unit of cost.
    """
    settings = calibrated[2]["calibration"]["settings"]
    # The fixture holds no probe answers: no agreement columns.
    assert len(settings) == len(cal.COLUMNS) - len(cal.AGREEMENT_COLUMNS)
    top = settings["expensive:plain:serial"]
    assert top["cost_ratio_vs_always_expensive"] == 1.0
    assert top["judge_cost_ratio_vs_always_expensive"] == 0.0
    judged = settings["cheap:judged:serial"]
    assert judged["judge_cost_ratio_vs_always_expensive"] > 0
    assert set(judged["per_task"]) == {"toy_code", "toy_facts", "toy_math"}


def test_calibrate_with_the_thresholds_policy_writes_no_value_model(
    small_data: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    """`--policy thresholds` ships risk thresholds and judge rates only, as before."""
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    result = calibrate(
        small_data,
        bundle / THRESHOLDS_FILE,
        _settings(),
        cal.CalibrationTarget.parse("max_cost_per_query", "0.5x"),
        Options(folds=FOLDS, model_dir=bundle, policy="thresholds"),
    )
    assert "policy" not in result.thresholds["cascade"]
    assert not (bundle / "value.onnx").exists()


def test_evaluating_a_value_bundle_routes_shipped_with_the_value_policy(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
    small_data: Path,
    tmp_path: Path,
) -> None:
    """`shipped` of a value bundle uses its default point's price; every operating point is
    a cross-fitted `shipped@<name>` strategy, and the report's default names the served one."""
    _, bundle, thresholds, _ = calibrated
    report = evaluate(small_data, tmp_path, _settings(), Options(folds=FOLDS, model_dir=bundle))
    cascade = thresholds["cascade"]
    price = cascade["value"]["price_per_correct_usd"]
    shipped = report["strategies"]["shipped"]
    assert f"value policy at ${price:g}" in shipped["description"]
    per_fold = report["cv"]["shipped_procedure"]["per_fold"]
    assert all(fold["policy"] == "value" for fold in per_fold)
    names = [f"shipped@{n}" for n in cascade["value"]["operating_points"]]
    assert set(names) <= set(report["strategies"])
    assert report["default"] == "shipped@custom" == report["goal"]["strategy"]
    assert set(report["goals"]) == {"shipped@parity", "shipped@q95"}
    assert report["pricing"]["ladder"] == "config"
    points = report["cv"]["operating_points"]
    assert all(len(p["per_fold_price_per_correct_usd"]) == FOLDS for p in points.values())
    assert "value policy (price of a correct answer)" in report["curves"]
    # What `shipped` did is what the value policy at the bundle's price predicts from the
    # tables and the out-of-fold estimates (the thresholds policy would differ).
    data = load_eval_data(small_data)
    cv = cross_validate(
        data, k=FOLDS, target=classifier_target(Bundle.read(bundle)), prefix_chars=4096
    )
    settings = eval_settings(_settings(), data, "config")
    tables = cal.build_tables(data, settings, GroundTruth.load(small_data))
    value = priced(value_estimates(data, cv, tables, Options()), settings)
    inputs, _ = cal.fold_inputs(cv, data, tables, value)
    params = cal.Params(
        tuple(cascade["risk"]), (1.0,) * 4, cascade["speculative_bound"], 1.0, price
    )
    everything = np.ones(len(data), dtype=bool)
    predicted = cal.figures(
        inputs, cal.columns_for(inputs, params, everything), everything, ["c", "m", "e"]
    )
    assert shipped["quality"] == predicted["quality"]
    assert shipped["cost_per_query_usd"] == predicted["cost_per_query_usd"]


def test_calibrate_keeps_the_route_thresholds_from_training(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
    trained_thresholds: dict[str, Any],
) -> None:
    """Calibrating the cascade leaves Route's thresholds and target as training set them."""
    thresholds = calibrated[2]
    assert thresholds["risk"] == trained_thresholds["risk"]
    assert thresholds["target"] == trained_thresholds["target"]
    assert thresholds["cascade"]["target"] == calibrated[0].as_dict()


def test_calibrate_keeps_the_familiarity_threshold_from_training(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
    trained_thresholds: dict[str, Any],
) -> None:
    """Calibrating rewrites thresholds.json but keeps training's familiarity section, which
    the served bundle reads."""
    target, bundle, thresholds, _ = calibrated
    del target
    assert thresholds["familiarity"] == trained_thresholds["familiarity"]
    model = RouterModel.load(bundle, 3)
    assert model.familiarity_threshold == trained_thresholds["familiarity"]["threshold"]


def test_calibrate_meets_a_cost_budget_on_the_rows_it_searched(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """In sample, the chosen configuration stays within the budget it was asked for."""
    in_sample = calibrated[2]["calibration"]["in_sample"]
    assert in_sample["cost_ratio_vs_always_expensive"] <= 0.5


def test_calibrate_reports_misroutes_per_task_and_query_type(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """The per-slice report has quality, cost and misroute rates for every task and type."""
    slices = calibrated[3]
    assert set(slices["task"]) == {"toy_code", "toy_facts", "toy_math"}
    for entry in [*slices["task"].values(), *slices["query_type"].values()]:
        assert {"quality", "cost_per_query_usd", "misroute_up", "misroute_down"} <= set(entry)


def test_calibration_lists_the_held_out_trade_off_curve(
    calibrated: tuple[cal.CalibrationTarget, Path, dict[str, Any], dict[str, Any]],
) -> None:
    """The thresholds file carries held-out figures for a sweep of cost and quality targets."""
    sweep = calibrated[2]["calibration"]["target_sweep"]
    assert len(sweep) == len(cal.SWEEP)
    feasible = [row for row in sweep if row["feasible"]]
    assert feasible
    assert all(row["cost_ratio_vs_always_expensive"] > 0 for row in feasible)


def test_an_unreachable_target_is_served_at_the_nearest_price_and_marked(
    small_data: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    """A quality floor no price reaches still calibrates: its point takes the nearest price
    and is marked unattainable with the quality that price reached, below the floor."""
    out = tmp_path / "thresholds.json"
    calibrate(
        small_data,
        out,
        _settings(),
        cal.CalibrationTarget.parse("min_quality", "0.99"),
        Options(folds=FOLDS, model_dir=bundle_dir),
    )
    points = json.loads(out.read_text())["cascade"]["value"]["operating_points"]
    unreachable = [p for p in points.values() if p["attainable"] is False]
    assert unreachable
    assert all(p["in_sample_quality"] < 0.99 for p in unreachable)


@pytest.mark.parametrize(
    ("text", "value", "relative"), [("0.3333x", 0.3333, True), ("0.002", 0.002, False)]
)
def test_targets_read_absolute_and_relative_values(text: str, value: float, relative: bool) -> None:
    """A trailing x makes a target relative to always using the top tier."""
    target = cal.CalibrationTarget.parse("max_cost_per_query", text)
    assert (target.value, target.relative) == (value, relative)


def test_virtual_time_overlaps_parallel_waits_and_adds_sequential_ones() -> None:
    """On the virtual clock two parallel waits take the longer; then a third adds on."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.gather(asyncio.sleep(2.0), asyncio.sleep(3.0))
        await asyncio.sleep(600.0)
        return loop.time()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        assert runner.run(scenario()) == pytest.approx(603.0)


TIERS = (
    TierConfig("cheap", "flash-model", 0.075, 0.3),
    TierConfig("mid", "pro-model", 1.25, 5.0),
    TierConfig("expensive", "big-model", 5.0, 15.0),
)


def _provider(small_data: Path) -> ReplayProvider:
    engine = ReplayEngine(load_store(small_data), TIERS, ReplayConfig(time_scale=1.0))
    return ReplayProvider(engine)


def test_replay_provider_returns_a_judge_verdict(small_data: Path) -> None:
    """A judge call through the in-process provider gets the record_verdict tool input."""
    record = make_records(1)[0]
    question = record["prompt"]
    candidate = record["models"]["big-model"]["response"]

    async def call() -> Any:
        return await _provider(small_data).complete(
            model="pro-model",
            messages=[
                Message(
                    "user",
                    f"<question>\n{question}\n</question>\n"
                    f"<candidate_answer>\n{candidate}\n</candidate_answer>",
                )
            ],
            max_tokens=256,
            timeout_s=30.0,
            system=JUDGE_SYSTEM,
            tool=JUDGE_TOOL,
        )

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        completion = runner.run(call())
    assert completion.tool_input is not None
    assert set(completion.tool_input) == {"passes", "issues"}
    assert completion.latency_s > 0


def test_replay_provider_raises_rate_limited_with_retry_after(small_data: Path) -> None:
    """An injected 429 becomes RateLimited carrying the reply's retry-after, as the SDK's does."""

    async def call() -> Any:
        return await _provider(small_data).complete(
            model="flash-model",
            messages=[Message("user", "hello")],
            max_tokens=64,
            timeout_s=30.0,
            headers={FAULT_HEADER: "429:7"},
        )

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner, pytest.raises(RateLimited) as err:
        runner.run(call())
    assert err.value.retry_after == 7.0


def _test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierroute")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    add_calibrate_parser(sub)
    return parser


def test_cli_eval_runs_as_a_subprocess(small_data: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """`tierroute eval --data F --out D` exits 0 and writes the report and the plot."""
    out = tmp_path / "out"
    env = {**os.environ, "TIERROUTE_MODEL_DIR": str(bundle_dir)}
    done = subprocess.run(
        [
            *[sys.executable, "-m", "tierroute"],
            "eval",
            "--data",
            str(small_data),
            "--out",
            str(out),
            "--folds",
            "3",
            "--limit",
            "150",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["n"] == 150
    assert (out / "frontier.png").is_file()
    assert "shipped" in done.stderr


def test_cli_eval_refuses_a_missing_data_file(tmp_path: Path) -> None:
    """A data file that does not exist exits 2 with a readable error."""
    args = _test_parser().parse_args(
        ["eval", "--data", str(tmp_path / "absent.jsonl.gz"), "--out", str(tmp_path), "--quiet"]
    )
    assert args.func(args, Settings.from_env({}), {}) == 2


def test_eval_refuses_a_classifier_configuration_without_a_bundle(
    small_data: Path, tmp_path: Path
) -> None:
    """The shipped classifier strategy cannot be evaluated without the model it serves."""
    with pytest.raises(ConfigError, match="no model bundle"):
        evaluate(small_data, tmp_path, _settings(), Options(folds=FOLDS, model_dir=tmp_path))


def test_the_goal_states_the_noise_of_the_quality_difference(report: dict[str, Any]) -> None:
    """The goal entry carries the paired standard error and a bootstrap interval around the
    point estimate it judges.
    """
    goal = report["goal"]
    low, high = goal["quality_diff_ci95"]
    assert low <= goal["quality_diff_vs_always_expensive"] <= high
    assert goal["quality_diff_se"] > 0


def test_paired_noise_by_hand() -> None:
    """Differences (0, -1, 1, 0): mean 0, sample sd sqrt(2/3), SE sqrt(2/3) / 2."""
    from tierroute.offline.evaluation.summary import paired_noise

    noise = paired_noise(np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.0, 1.0]))
    assert noise["quality_diff_se"] == pytest.approx(np.sqrt(2 / 3) / 2, abs=1e-6)
    low, high = noise["quality_diff_ci95"]
    assert -0.75 <= low < 0 < high <= 0.75
    assert paired_noise(np.array([1.0]), np.array([0.0]))["quality_diff_se"] is None


def test_an_operating_point_through_the_engine_matches_its_table_figures(
    cv: tuple[EvalData, CrossValidation],
) -> None:
    """A cross-fitted operating point (`shipped@<name>` in reports) answers, through the
    router and engine, exactly what its table lookups predict."""
    from tierroute.model.operating import OPERATING_POINTS

    data, folds = cv
    settings = eval_settings(_settings(), data, "config")
    truth = GroundTruth.load(data.path)
    tables = cal.build_tables(data, settings, truth)
    value = priced(value_estimates(data, folds, tables, Options(folds=FOLDS)), settings)
    inputs, fold_array = cal.fold_inputs(folds, data, tables, value)
    base = cal.cross_fit(inputs, fold_array, cal.CalibrationTarget("min_quality", 1.0, True))
    fit = cal.point_cross_fit(inputs, fold_array, base, OPERATING_POINTS["q95"])
    predicted = cal.figures(inputs, fit.columns, np.ones(len(data), dtype=bool), ["c", "m", "e"])
    tuned = cal.tuned_strategy(
        "q95", "under test", settings=settings, data=data, cv=folds, fit=fit, inputs=inputs
    )
    outcomes = run_strategies(data, [tuned], folds=folds.fold_of)["q95"]
    actual = strategy_metrics(outcomes, data, truth, ["c", "m", "e"])
    for key in ("quality", "cost_per_query_usd"):
        assert actual[key] == predicted[key], key


@pytest.mark.parametrize("spec", ["config", "recorded"])
def test_both_price_ladders_price_the_same_answers(
    cv: tuple[EvalData, CrossValidation], spec: str
) -> None:
    """`--prices config` bills the configured tiers' prices, `recorded` the recorded trio's;
    the recorded models answer either way."""
    data, _ = cv
    settings = eval_settings(_settings(), data, spec)
    expected = (
        [(t.input_usd_per_mtok, t.output_usd_per_mtok) for t in _settings().tiers]
        if spec == "config"
        else [data.pricing.usd_per_mtok[k] for k in ("cheap", "mid", "expensive")]
    )
    assert [(t.input_usd_per_mtok, t.output_usd_per_mtok) for t in settings.tiers] == expected
    assert [t.model for t in settings.tiers] == [
        data.trio[k] for k in ("cheap", "mid", "expensive")
    ]


def test_a_prices_file_replaces_the_configured_prices(
    cv: tuple[EvalData, CrossValidation], tmp_path: Path
) -> None:
    """A TOML file of [[tiers]] prices the tiers it names; a tier it lacks is a ConfigError."""
    data, _ = cv
    path = tmp_path / "prices.toml"
    rows = "".join(
        f'[[tiers]]\nname = "{n}"\ninput_usd_per_mtok = {i}\noutput_usd_per_mtok = {o}\n'
        for n, i, o in (("cheap", 0.5, 2.0), ("mid", 1.0, 4.0), ("expensive", 2.0, 8.0))
    )
    path.write_text(rows)
    settings = eval_settings(_settings(), data, str(path))
    assert [t.output_usd_per_mtok for t in settings.tiers] == [2.0, 4.0, 8.0]
    path.write_text(rows.split('[[tiers]]\nname = "expensive"')[0])
    with pytest.raises(ConfigError, match="no \\[\\[tiers\\]\\] entry named 'expensive'"):
        eval_settings(_settings(), data, str(path))
