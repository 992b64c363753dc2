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
from typing import Any, TypeVar

import numpy as np

from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model import Bundle
from tierroute.model.bundle import CASCADE_SECTION, MODEL_FILE, THRESHOLDS_FILE
from tierroute.model.operating import (
    DEFAULT_POINT,
    OPERATING_POINTS,
    Ladder,
    PointTarget,
    parse_points,
    reference_points,
)
from tierroute.model.value import operating_prices
from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation import calibration_output, valuefit
from tierroute.offline.evaluation.agreement import NAMES as AGREEMENT_ORDER
from tierroute.offline.evaluation.agreement import agreement_strategies
from tierroute.offline.evaluation.attainable import cross_fit_or_fallback, unattainable_points
from tierroute.offline.evaluation.calibration_probe import ladder as probe_ladder
from tierroute.offline.evaluation.calibration_probe import probe_settings, table_probe
from tierroute.offline.evaluation.crossval import CrossValidation, cross_validate
from tierroute.offline.evaluation.curves import price_curve, risk_curve
from tierroute.offline.evaluation.eval_data import (
    LADDER_CONFIG,
    PRICES_FILE,
    EvalData,
    ladder_kind,
    load_eval_data,
    load_store,
    pricing_report,
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
    POINT_GOALS,
    REPORT_FILE,
    SUMMARY_FILE,
    build_report,
    markdown_summary,
    write_json,
)
from tierroute.offline.evaluation.trio import trio_view
from tierroute.offline.evaluation.usable import usable_view
from tierroute.offline.training.calibrate import DEFAULT_MAX_COST_RATIO, Target
from tierroute.offline.training.value_fit import solve_points, write_value_model
from tierroute.settings import ProbeConfig, Settings

logger = logging.getLogger(__name__)

SHIPPED_CV = "shipped_cv"
DEFAULT_FOLDS = 5
DEFAULT_TARGET = cal.CalibrationTarget("max_cost_per_query", DEFAULT_MAX_COST_RATIO, relative=True)
N_TABLE_COLUMNS = len(cal.COLUMNS)
POLICIES = ("value", "thresholds")

Progress = Callable[[int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Knobs shared by `evaluate` and `calibrate`."""

    folds: int = DEFAULT_FOLDS
    workers: int = 1
    seed: int = 0
    limit: int | None = None
    # The price ladder (`eval_data.ladder_kind`): "config", "recorded", a prices CSV or a
    # TOML file of [[tiers]] prices.
    prices: str = LADDER_CONFIG
    model_dir: Path | None = None
    speculation_cost_share: float = cal.DEFAULT_SPECULATION_COST_SHARE
    # calibrate: "value" fits the value model and searches its price; "thresholds" ships
    # risk thresholds and judge sampling rates only.
    policy: str = "value"
    # calibrate: the operating point the bundle serves by default (None: `parity`, or
    # `custom` when an explicit target was given).
    operating_point: str | None = None


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
    ladder_kind(options.prices)
    csv = Path(options.prices) if options.prices.lower().endswith(".csv") else None
    data = load_eval_data(data_path, prices=csv, limit=options.limit)
    truth = GroundTruth.load(data_path, options.limit)
    bundle = read_bundle(settings, options)
    played = eval_settings(settings, data, options.prices)
    # The probe under its own model id, played by the recorded models the data holds: under
    # the configured id a probe that names a recorded tier model (claude-3-haiku in the
    # Claude-3 trio) would be answered as that tier and agree with it every time.
    probe = table_probe(played, data, options.prices)
    return data, truth, bundle, played if probe is None else probe_settings(played, probe)


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
    return in_view(
        data_path,
        options,
        trio,
        lambda path, opts, extra: _evaluate(
            path, out_dir, settings, opts, progress=progress, extra=extra
        ),
    )


def in_view(
    data_path: Path,
    options: Options,
    trio: Sequence[str] | None,
    run: Callable[[Path, Options, Mapping[str, Any] | None], T],
) -> T:
    """`run(path, options, extra)` on the records of `data_path` it can answer and score
    (`usable.usable_view`; `extra["records_check"]` counts the rest), with `trio` on the view
    in which those recorded models play the tiers (`trio.trio_view`; `extra` says which)."""
    with tempfile.TemporaryDirectory(prefix="tierroute-eval-") as tmp:
        extra: dict[str, Any] = {}
        if trio is not None:
            source = data_path
            data_path, extra["trio"] = trio_view(data_path, trio, Path(tmp) / data_path.name)
            # The view is written elsewhere: the recorded prices stay the data's prices.csv.
            recorded = ladder_kind(options.prices) == "recorded"
            if recorded and not options.prices.lower().endswith(".csv"):
                options = dataclasses.replace(options, prices=str(source.parent / PRICES_FILE))
        data_path, extra["records_check"] = usable_view(data_path, Path(tmp) / "usable")
        return run(data_path, options, extra)


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
    value_policy = bundle is not None and bundle.cascade_policy == "value"
    tables = cal.build_tables(
        data,
        settings,
        truth,
        workers=options.workers,
        progress=tick,
        store=store,
        probe=table_probe(settings, data, options.prices) if value_policy else None,
    )
    value = None
    points: dict[str, Any] = {}
    served_price = None
    if bundle is not None and value_policy:
        value = priced(value_estimates(data, cv, tables, options), settings, tables.probe)
        points, default_point, served_price = bundle_points(bundle, settings)
    inputs, folds = cal.fold_inputs(cv, data, tables, value)
    strategies: list[Strategy] = [
        *baseline_strategies(settings),
        oracle_strategy(
            settings, oracle_start_tiers(truth, {r.id: r.replay_id for r in data.records}, names)
        ),
        *routed_strategies(settings, data, cv),
        *agreement,
        shipped_strategy(settings, data, cv, bundle, value, price=served_price),
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
    # A target this file cannot reach is reported, and the run goes on (attainable).
    fit, unattainable = cross_fit_or_fallback(inputs, folds, target, DEFAULT_TARGET, share)
    if value is not None:
        unattainable += unattainable_points(inputs, points, share)
    tuned_list: list[Strategy] = []
    point_folds: dict[str, Any] = {}
    if value is not None:
        # Every operating point cross-fitted: per fold, its price solved on the other folds
        # (risk thresholds, judge rates and speculative bound as the shipped target's).
        for name, point in points.items():
            point_fit = cal.point_cross_fit(inputs, folds, fit, point, share)
            tuned_list.append(
                cal.tuned_strategy(
                    point_name(name),
                    f"operating point {name} cross-fitted: per fold, the value policy's price "
                    f"of a correct answer solved on the other folds toward: "
                    f"{point.statement()}",
                    settings=settings,
                    data=data,
                    cv=cv,
                    fit=point_fit,
                    inputs=inputs,
                )
            )
            point_folds[name] = {
                "target": point.as_dict(),
                "per_fold_price_per_correct_usd": [
                    p.price_per_correct_usd for p in point_fit.params
                ],
            }
        default = goal_strategy = point_name(default_point)
    else:
        tuned_list.append(
            cal.tuned_strategy(
                SHIPPED_CV,
                "the shipped configuration's calibration procedure, cross-fitted: per fold, "
                "risk thresholds, judge rates and speculative bound searched on the other "
                f"folds toward: {target.statement()}",
                settings=settings,
                data=data,
                cv=cv,
                fit=fit,
                inputs=inputs,
            )
        )
        default, goal_strategy = SHIPPED, SHIPPED_CV
    outcomes.update(run(tuned_list))
    # Random routing at the default's cost: each tier's one-call cost per record is what
    # its always-tier baseline paid.
    tier_costs = [
        [o.cost_usd for o in outcomes[always_name(i, len(names))]] for i in range(len(names))
    ]
    default_cost = float(np.mean([o.cost_usd for o in outcomes[default]]))
    random = random_strategy(
        settings,
        [r.id for r in data.records],
        tier_costs,
        default_cost,
        options.seed,
        compared=default,
    )
    outcomes.update(run([random]))
    strategies += [*tuned_list, random]
    order = [*ORDER, *AGREEMENT_ORDER, *(s.name for s in tuned_list)]
    ordered = {name: outcomes[name] for name in order if name in outcomes}
    report = build_report(
        data,
        ordered,
        truth,
        tier_names=names,
        descriptions=describe(strategies),
        default=default,
        goal_strategy=goal_strategy,
        point_goals={
            point_name(name): bounds
            for name, bounds in POINT_GOALS[ladder_kind(options.prices)].items()
        },
        extra={
            "cv": {
                **cv.as_dict(),
                "shipped_procedure": {
                    "target": target.as_dict(),
                    "speculation_cost_share": share,
                    "per_fold": [p.as_dict() for p in fit.params],
                },
                "operating_points": point_folds,
            },
            **(extra or {}),
            "unattainable": unattainable,
            "pricing": pricing_report(settings.tiers, options.prices, data),
            "curves": curves(inputs, names, value is not None),
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
    """Out-of-fold value-model estimates per action, in record order (the CV folds):
    P(correct) (rows, A) and expected tokens (rows, A, T, 2)."""
    assert tables.tokens is not None  # build_tables counts tokens
    quality, tokens = valuefit.action_targets(tables.quality, tables.tokens, tables.action_columns)
    return valuefit.out_of_fold(
        valuefit.featurised(data, cv.prefix_chars),
        quality,
        tokens,
        cv.fold_array(data),
        options.workers,
    )


def priced(
    estimates: valuefit.Estimates, settings: Settings, probe: ProbeConfig | None = None
) -> valuefit.Estimates:
    """(P(correct), cost USD) per action: the predicted tokens priced with `settings`' tiers
    (and `probe`'s prices, the agreement probe's payer, when the tables had one)."""
    return estimates[0], probe_ladder(settings.tiers, probe).price(estimates[1])


def point_name(name: str) -> str:
    """The report's strategy name of an operating point."""
    return f"{SHIPPED}@{name}"


def bundle_points(bundle: Bundle, settings: Settings) -> tuple[dict[str, PointTarget], str, float]:
    """The bundle's operating point targets, its default point's name, and that point's
    price of a correct answer under `settings`' tier prices (solved again from the stored
    calibration data when they differ from the calibration's)."""
    section = bundle.thresholds[CASCADE_SECTION]["value"]
    where = str(bundle.path / THRESHOLDS_FILE)
    try:
        targets = parse_points(section.get("operating_points"), where)
        _, prices, default = operating_prices(
            bundle.path,
            section,
            n_tiers=len(settings.tiers),
            where=where,
            ladder=Ladder.of(settings.tiers),
        )
    except ModelLoadError as exc:
        raise ConfigError(f"{exc} (rebuild the bundle with `make model`)") from exc
    return targets, default, prices[default]


def curves(inputs: cal.Inputs, names: list[str], value: bool) -> dict[str, Any]:
    """Each policy's trade-off over its knob, from the tables (out-of-fold estimates)."""
    out = {"classifier (risk threshold)": risk_curve(inputs)}
    if value:
        out["value policy (price of a correct answer)"] = price_curve(inputs)
    return out


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` wrote."""

    thresholds: dict[str, Any]
    slices: dict[str, Any]


CUSTOM_POINT = "custom"


def point_targets(
    settings: Settings, target: cal.CalibrationTarget | None, options: Options
) -> tuple[dict[str, PointTarget], str]:
    """The operating points a calibration ships (the named ones, `ref_parity` against the
    reference tier when one is set, and `target` as `custom`) and the default one's name."""
    targets: dict[str, PointTarget] = {
        **OPERATING_POINTS,
        **reference_points([t.name for t in settings.tiers], settings.routing.reference_tier),
    }
    if target is not None:
        targets[CUSTOM_POINT] = PointTarget(target.kind, target.value, target.relative)
    default_point = options.operating_point or (
        CUSTOM_POINT if target is not None else DEFAULT_POINT
    )
    if default_point not in targets:
        raise ConfigError(f"--operating-point {default_point!r} is not one of {', '.join(targets)}")
    return targets, default_point


def calibrate(
    data_path: Path,
    out: Path,
    settings: Settings,
    target: cal.CalibrationTarget | None,
    options: Options,
    *,
    report_path: Path | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> CalibrationResult:
    """Search the shipped configuration and write the thresholds file.

    The value policy ships the named OPERATING_POINTS, priced for `options.prices`, and
    `target` (None: `parity`'s) as operating point `custom` when one is given; the risk
    thresholds, judge rates and speculative bound are searched toward the default point's
    target.
    """
    data, truth, bundle, settings = prepare(data_path, settings, options)
    if bundle is None:
        raise ConfigError(
            "calibrate needs the model bundle whose thresholds it writes (--model-dir)"
        )
    if options.policy not in POLICIES:
        raise ConfigError(
            f"calibration policy {options.policy!r} is unknown; use one of {POLICIES}"
        )
    targets, default_point = point_targets(settings, target, options)
    chosen = targets[default_point]
    search_target = cal.CalibrationTarget(chosen.kind, chosen.value, chosen.relative)
    cv = cross_validate_for(data, bundle, options)
    tick = progress(len(data) * N_TABLE_COLUMNS) if progress is not None else None
    store = load_store(data.path, data.limit) if options.workers <= 1 else None
    tables = cal.build_tables(
        data,
        settings,
        truth,
        workers=options.workers,
        progress=tick,
        store=store,
        # The agreement checks are value-policy actions: their columns only for it.
        probe=table_probe(settings, data, options.prices) if options.policy == "value" else None,
    )
    estimates = value_estimates(data, cv, tables, options) if options.policy == "value" else None
    value = priced(estimates, settings, tables.probe) if estimates is not None else None
    inputs, folds = cal.fold_inputs(cv, data, tables, value)
    share = options.speculation_cost_share
    # A value-policy price no price meets takes the nearest (see CALIBRATION.md,
    # "Unattainable operating points"); the point is marked below, not an exit.
    fit = cal.cross_fit(inputs, folds, search_target, speculation_cost_share=share, nearest=True)
    everything = np.ones(len(data), dtype=bool)
    names = [t.name for t in settings.tiers]
    params = cal.search(
        inputs, everything, search_target, speculation_cost_share=share, nearest=True
    )
    unattainable: dict[str, Any] = {}
    value_section = None
    held_fit = fit
    if estimates is not None and tables.tokens is not None:
        ladder = probe_ladder(settings.tiers, tables.probe)
        columns = tables.action_columns
        evidence = valuefit.evidence(
            estimates,
            tables.quality[:, columns],
            tables.tokens[:, columns],
            inputs.allowed,
            len(names),
        )
        entries = solve_points(evidence, ladder, targets, share)
        unattainable = _mark_attainable(entries)
        for name, point in targets.items():
            point_fit = cal.point_cross_fit(inputs, folds, fit, point, share)
            if name == default_point:
                held_fit = point_fit
            entries[name]["held_out"] = _brief(
                cal.figures(inputs, point_fit.columns, everything, names)
            )
        params = dataclasses.replace(
            params, price_per_correct_usd=entries[default_point]["price_per_correct_usd"]
        )
        texts = valuefit.featurised(data, cv.prefix_chars)
        quality, tokens = valuefit.action_targets(tables.quality, tables.tokens, columns)
        value_pipeline = valuefit.fit_all(texts, quality, tokens)
    held_out = cal.figures(inputs, held_fit.columns, everything, names)
    in_sample = cal.figures(inputs, cal.columns_for(inputs, params, everything), everything, names)
    sweep = cal.target_sweep(inputs, folds, names, speculation_cost_share=share)
    slices = calibration_output.slice_report(data, inputs, held_fit.columns, truth, names)
    # The value model, its calibration data and the file naming their hashes are written
    # back to back, after all the work, so a reader never waits through a search with one
    # of them stale.
    if estimates is not None:
        value_section = write_value_model(
            out.parent,
            value_pipeline,
            evidence,
            ladder=ladder,
            points=entries,
            default_point=default_point,
            prefix_chars=cv.prefix_chars,
            parity_texts=[r.prompt for r in data.records],
            share=share,
            # One feature pass for the classifier and the value heads (shared_graph).
            classifier_model=(bundle.path / MODEL_FILE).read_bytes(),
            actions=valuefit.actions_for(estimates),
            probe=tables.probe,
        )
    document = calibration_output.thresholds_document(
        version=bundle.version,
        tier_names=names,
        params=params,
        target=search_target,
        in_sample=in_sample,
        held_out=held_out,
        fit=held_fit,
        cv=cv,
        data=data,
        speculation_cost_share=share,
        sweep=sweep,
        classifier_cv=bundle.thresholds.get("classifier_cv", bundle.thresholds.get("cv")),
        static=bundle.thresholds,
        value_section=value_section,
        pricing=pricing_report(settings.tiers, options.prices, data),
        settings=calibration_output.settings_table(inputs, data, names),
    )
    write_json(out, document)
    if report_path is not None:
        report = {"target": search_target.as_dict(), "folds": cv.k, **slices}
        write_json(report_path, {**report, "unattainable": unattainable})
    return CalibrationResult(document, slices)


def _mark_attainable(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mark each point's entry `attainable` (its price meets its target in sample) and
    return the unattainable ones: their target, price and what that price reached."""
    keys = ("target", "price_per_correct_usd", "in_sample_quality", "in_sample_cost_per_query_usd")
    for entry in entries.values():
        entry["attainable"] = bool(entry["feasible"])
    return {n: {k: e[k] for k in keys} for n, e in entries.items() if not e["attainable"]}


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "quality",
        "cost_per_query_usd",
        "quality_vs_always_expensive",
        "cost_ratio_vs_always_expensive",
        "p95_latency_ms",
    )
    return {k: figures[k] for k in keys}
