"""The two evaluation jobs end to end: `evaluate` (report and plot) and `calibrate`.

Each reads the data without ground truth for the harness, fits the cross-validation fold
models (the training step), answers every record with every strategy through the server's
own router and cascade engine, and only then scores with the ground truth.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import ConfigError
from tierroute.model import Bundle
from tierroute.model.bundle import THRESHOLDS_FILE
from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation import calibration_output, valuefit
from tierroute.offline.evaluation.agreement import NAMES as AGREEMENT_ORDER
from tierroute.offline.evaluation.agreement import agreement_strategies
from tierroute.offline.evaluation.crossval import CrossValidation, cross_validate
from tierroute.offline.evaluation.eval_data import (
    PRICES_FILE,
    EvalData,
    load_eval_data,
    load_store,
)
from tierroute.offline.evaluation.first_token import first_token_report
from tierroute.offline.evaluation.harness import Outcome, Strategy, describe, run_strategies
from tierroute.offline.evaluation.scoring import GroundTruth, oracle_start_tiers
from tierroute.offline.evaluation.strategies import (
    ORDER,
    SHIPPED,
    always_name,
    baseline_strategies,
    eval_settings,
    oracle_strategy,
    random_strategy,
    routed_strategies,
    shipped_strategy,
)
from tierroute.offline.evaluation.summary import (
    PLOT_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    build_report,
    markdown_summary,
    write_json,
)
from tierroute.offline.evaluation.trio import trio_view
from tierroute.offline.training.calibrate import DEFAULT_MAX_COST_RATIO, Target
from tierroute.offline.training.value_fit import prepare_value_model, write_model_file
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

SHIPPED_CV = "shipped_cv"
DEFAULT_FOLDS = 5
DEFAULT_TARGET = cal.CalibrationTarget("max_cost_per_query", DEFAULT_MAX_COST_RATIO, relative=True)
N_TABLE_COLUMNS = len(cal.COLUMNS)
POLICIES = ("value", "thresholds")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Options:
    """Knobs shared by `evaluate` and `calibrate`."""

    folds: int = DEFAULT_FOLDS
    workers: int = 1
    seed: int = 0
    limit: int | None = None
    prices: Path | None = None
    model_dir: Path | None = None
    speculation_cost_share: float = cal.DEFAULT_SPECULATION_COST_SHARE
    # calibrate: "value" fits the value model and searches its price; "thresholds" ships
    # risk thresholds and judge sampling rates only.
    policy: str = "value"


def read_bundle(settings: Settings, options: Options) -> Bundle | None:
    """The model bundle the shipped configuration serves, if there is one."""
    model_dir = options.model_dir or settings.routing.model_dir
    if not (model_dir / THRESHOLDS_FILE).is_file():
        logger.warning("no model bundle at %s: classifier strategies use defaults", model_dir)
        return None
    return Bundle.read(model_dir)


def classifier_target(bundle: Bundle | None) -> Target:
    """The training code's calibration target for the static classifier's thresholds."""
    raw = (bundle.thresholds.get("target") if bundle else None) or {}
    kind, value = raw.get("kind"), raw.get("value")
    relative = raw.get("relative_to") == "always_top_tier"
    if isinstance(value, int | float) and relative:
        if kind in ("max_cost_ratio", "max_cost_per_query"):
            return Target("max_cost_ratio", float(value))
        if kind in ("min_quality_ratio", "min_quality") and 0 < value <= 1:
            return Target("min_quality_ratio", float(value))
    return Target("max_cost_ratio", DEFAULT_MAX_COST_RATIO)


def shipped_target(bundle: Bundle | None) -> tuple[cal.CalibrationTarget, float]:
    """The target and speculation share `tierroute calibrate` shipped with, else defaults."""
    section = bundle.thresholds.get("cascade") if bundle else None
    raw = (section.get("target") if isinstance(section, dict) else None) or {}
    share = cal.DEFAULT_SPECULATION_COST_SHARE
    calibration = bundle.thresholds.get("calibration") if bundle else None
    if isinstance(calibration, dict):
        share = float(calibration.get("search", {}).get("speculation_cost_share", share))
    if raw.get("kind") in ("max_cost_per_query", "min_quality"):
        return (
            cal.CalibrationTarget(
                raw["kind"], float(raw["value"]), raw.get("relative_to") == "always_top_tier"
            ),
            share,
        )
    return DEFAULT_TARGET, share


def prepare(
    data_path: Path, settings: Settings, options: Options
) -> tuple[EvalData, GroundTruth, Bundle | None, Settings]:
    """The data (without ground truth), the ground truth, the bundle and the eval settings."""
    data = load_eval_data(data_path, prices=options.prices, limit=options.limit)
    truth = GroundTruth.load(data_path, options.limit)
    bundle = read_bundle(settings, options)
    return data, truth, bundle, eval_settings(settings, data)


def cross_validate_for(data: EvalData, bundle: Bundle | None, options: Options) -> CrossValidation:
    """The classifier's fold models and out-of-fold probabilities, as the bundle was trained."""
    none_label = bundle.none_label if bundle else "cheap"
    if none_label not in ("cheap", "drop"):
        raise ConfigError(f"bundle none-label policy {none_label!r} is unknown")
    return cross_validate(
        data,
        k=options.folds,
        target=classifier_target(bundle),
        prefix_chars=bundle.prefix_chars if bundle else 4096,
        none_label="drop" if none_label == "drop" else "cheap",
        workers=options.workers,
        seed=options.seed,
    )


def evaluate(
    data_path: Path,
    out_dir: Path,
    settings: Settings,
    options: Options,
    *,
    progress: Callable[[int], Progress] | None = None,
    trio: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Answer every record with every strategy, score, and write report.json and the plot.

    `progress(total)` is called once with the number of record answers to come and returns
    the callback the harness calls as they finish. With `trio` (cheap, mid and expensive
    recorded model keys) only the records holding all three are evaluated, with those
    models playing the tiers (`trio.trio_view`); the report's `trio` says which.
    """
    if trio is None:
        return _evaluate(data_path, out_dir, settings, options, progress=progress)
    with tempfile.TemporaryDirectory(prefix="tierroute-trio-") as tmp:
        view, info = trio_view(data_path, trio, Path(tmp) / data_path.name)
        prices = options.prices or data_path.parent / PRICES_FILE
        return _evaluate(
            view,
            out_dir,
            settings,
            dataclasses.replace(options, prices=prices),
            progress=progress,
            extra={"trio": info},
        )


def _evaluate(
    data_path: Path,
    out_dir: Path,
    settings: Settings,
    options: Options,
    *,
    progress: Callable[[int], Progress] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data, truth, bundle, settings = prepare(data_path, settings, options)
    if bundle is None and settings.routing.default_strategy == "classifier":
        raise ConfigError(
            "the shipped configuration routes with the classifier, but there is no model "
            "bundle to evaluate (run `make model` or pass --model-dir)"
        )
    cv = cross_validate_for(data, bundle, options)
    names = [t.name for t in settings.tiers]
    agreement = agreement_strategies(settings, data)
    # Every strategy, the calibration tables, and the shipped strategy once more streamed.
    n_runs = len(data) * (len(ORDER) + len(agreement) + N_TABLE_COLUMNS + 1)
    tick = progress(n_runs) if progress is not None else None
    store = load_store(data.path, data.limit) if options.workers <= 1 else None
    # The shipped procedure cross-fitted: calibrate on the other folds, answer the fold. Its
    # tables (and, for the value policy, out-of-fold value estimates) come first, because
    # the shipped strategy routes with the same estimates.
    target, share = shipped_target(bundle)
    tables = cal.build_tables(
        data, settings, truth, workers=options.workers, progress=tick, store=store
    )
    value = None
    if bundle is not None and bundle.cascade_policy == "value":
        value = value_estimates(data, cv, tables, options)
    inputs, folds = cal.fold_inputs(cv, data, tables, value)
    strategies: list[Strategy] = [
        *baseline_strategies(settings),
        oracle_strategy(
            settings, oracle_start_tiers(truth, {r.id: r.replay_id for r in data.records}, names)
        ),
        *routed_strategies(settings, data, cv),
        *agreement,
        shipped_strategy(settings, data, cv, bundle, value),
    ]

    def run(items: list[Strategy], *, stream: bool = False) -> dict[str, tuple[Outcome, ...]]:
        return run_strategies(
            data,
            items,
            folds=cv.fold_of,
            workers=options.workers,
            seed=options.seed,
            progress=tick,
            store=store,
            stream=stream,
        )

    outcomes = run(strategies)
    # The shipped strategy once more, the way CascadeStream answers: time to first token.
    streamed = run([strategies[-1]], stream=True)[SHIPPED]
    fit = cal.cross_fit(inputs, folds, target, speculation_cost_share=share)
    searched = (
        "the value policy's price of a correct answer (with risk thresholds and judge rates "
        "as its fallback)"
        if value is not None
        else "risk thresholds, judge rates"
    )
    tuned = cal.tuned_strategy(
        SHIPPED_CV,
        f"the shipped configuration's calibration procedure, cross-fitted: per fold, {searched} "
        f"and speculative bound searched on the other folds toward: {target.statement()}",
        settings=settings,
        data=data,
        cv=cv,
        fit=fit,
        inputs=inputs,
    )
    # Random routing at the shipped strategy's cost: each tier's one-call cost per record is
    # what its always-tier baseline paid.
    tier_costs = [
        [o.cost_usd for o in outcomes[always_name(i, len(names))]] for i in range(len(names))
    ]
    shipped_cost = float(np.mean([o.cost_usd for o in outcomes[SHIPPED]]))
    random = random_strategy(
        settings, [r.id for r in data.records], tier_costs, shipped_cost, options.seed
    )
    outcomes.update(run([tuned, random]))
    strategies += [tuned, random]
    ordered = {name: outcomes[name] for name in (*ORDER, *AGREEMENT_ORDER) if name in outcomes}
    report = build_report(
        data,
        ordered,
        truth,
        tier_names=names,
        descriptions=describe(strategies),
        default=SHIPPED,
        goal_strategy=SHIPPED_CV,
        extra={
            "cv": {
                **cv.as_dict(),
                SHIPPED_CV: {
                    "target": target.as_dict(),
                    "speculation_cost_share": share,
                    "per_fold": [p.as_dict() for p in fit.params],
                },
            },
            **(extra or {}),
            "pricing": data.pricing.as_dict(),
            "seed": options.seed,
            "time_to_first_token": first_token_report(outcomes[SHIPPED], streamed, SHIPPED),
            "bundle": bundle.version if bundle else None,
            "simulation": {
                "clock": "virtual: simulated latency, no real waiting",
                "latency_model": {
                    "ttft_s": list(settings.replay.ttft_s),
                    "tokens_per_s": list(settings.replay.tokens_per_s),
                },
                "max_output_tokens": settings.cascade.max_output_tokens,
                "judge_max_output_tokens": settings.cascade.judge_max_output_tokens,
                # What each judge call is billed (settings.replay.judge_billing).
                "judge_billing": settings.replay.judge_billing,
            },
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / REPORT_FILE, report)
    (out_dir / SUMMARY_FILE).write_text(markdown_summary(report), encoding="utf-8")
    from tierroute.offline.evaluation.plot import plot_frontier

    plot_frontier(report, out_dir / PLOT_FILE)
    return report


def value_estimates(
    data: EvalData, cv: CrossValidation, tables: cal.Tables, options: Options
) -> valuefit.Estimates:
    """Out-of-fold value-model estimates per action, in record order (the CV folds)."""
    quality, cost = valuefit.action_targets(tables.quality, tables.cost, cal.ACTION_COLUMNS)
    return valuefit.out_of_fold(
        valuefit.featurised(data, cv.prefix_chars),
        quality,
        cost,
        cv.fold_array(data),
        options.workers,
    )


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` wrote."""

    thresholds: dict[str, Any]
    slices: dict[str, Any]


def calibrate(
    data_path: Path,
    out: Path,
    settings: Settings,
    target: cal.CalibrationTarget,
    options: Options,
    *,
    report_path: Path | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> CalibrationResult:
    """Search the shipped configuration toward `target` and write the thresholds file."""
    data, truth, bundle, settings = prepare(data_path, settings, options)
    if bundle is None:
        raise ConfigError(
            "calibrate needs the model bundle whose thresholds it writes (--model-dir)"
        )
    cv = cross_validate_for(data, bundle, options)
    tick = progress(len(data) * N_TABLE_COLUMNS) if progress is not None else None
    store = load_store(data.path, data.limit) if options.workers <= 1 else None
    tables = cal.build_tables(
        data, settings, truth, workers=options.workers, progress=tick, store=store
    )
    if options.policy not in POLICIES:
        raise ConfigError(
            f"calibration policy {options.policy!r} is unknown; use one of {POLICIES}"
        )
    value = value_estimates(data, cv, tables, options) if options.policy == "value" else None
    inputs, folds = cal.fold_inputs(cv, data, tables, value)
    share = options.speculation_cost_share
    fit = cal.cross_fit(inputs, folds, target, speculation_cost_share=share)
    everything = np.ones(len(data), dtype=bool)
    names = [t.name for t in settings.tiers]
    held_out = cal.figures(inputs, fit.columns, everything, names)
    params = cal.search(inputs, everything, target, speculation_cost_share=share)
    in_sample = cal.figures(inputs, cal.columns_for(inputs, params, everything), everything, names)
    value_section = None
    value_bytes = b""
    if params.price_per_correct_usd is not None:
        texts = valuefit.featurised(data, cv.prefix_chars)
        quality, cost = valuefit.action_targets(tables.quality, tables.cost, cal.ACTION_COLUMNS)
        value_bytes, value_section = prepare_value_model(
            valuefit.fit_all(texts, quality, cost),
            price_per_correct_usd=params.price_per_correct_usd,
            prefix_chars=cv.prefix_chars,
            parity_texts=[r.prompt for r in data.records],
        )
    document = calibration_output.thresholds_document(
        version=bundle.version,
        tier_names=names,
        params=params,
        target=target,
        in_sample=in_sample,
        held_out=held_out,
        fit=fit,
        cv=cv,
        data=data,
        speculation_cost_share=share,
        sweep=cal.target_sweep(inputs, folds, names, speculation_cost_share=share),
        classifier_cv=bundle.thresholds.get("classifier_cv", bundle.thresholds.get("cv")),
        static=bundle.thresholds,
        value_section=value_section,
        settings=calibration_output.settings_table(inputs, data, names),
    )
    slices = calibration_output.slice_report(data, inputs, fit.columns, truth, names)
    # The value model and the file naming its hash are written back to back, after all the
    # work, so a reader never waits through a search with one of them stale.
    if value_section is not None:
        write_model_file(out.parent, value_bytes)
    write_json(out, document)
    if report_path is not None:
        write_json(report_path, {"target": target.as_dict(), "folds": cv.k, **slices})
    return CalibrationResult(document, slices)
