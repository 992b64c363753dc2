"""The `tierroute eval` and `tierroute calibrate` subcommands.

Registering them imports nothing heavy: scikit-learn and matplotlib load only when a
command runs, so the serving CLI can offer both without paying for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError, ModelLoadError
from tierroute.offline.cli.args import add_data_argument, add_folds_argument
from tierroute.offline.training.calibrate import DEFAULT_MAX_COST_RATIO
from tierroute.outcomes import default_data_path
from tierroute.settings import RoutingConfig, Settings

logger = logging.getLogger(__name__)


def _common(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N records")
    add_folds_argument(parser, what="cross-validation folds")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1: in-process)"
    )
    parser.add_argument(
        "--prices",
        default="config",
        metavar="LADDER",
        help="what the tiers' tokens cost: 'config' (the configured [[tiers]] prices, what "
        "`make run` serves; default), 'recorded' (the recorded trio's, prices.csv beside the "
        "data), a prices CSV of the shared data schema, or a TOML file of [[tiers]] entries "
        "(name, input_usd_per_mtok, output_usd_per_mtok) replacing the configured prices",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model bundle of the shipped configuration (default: routing.model_dir)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random routing (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_eval_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `eval` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "eval",
        help="replay a recorded-outcome file through every strategy; write the frontier",
        description="Answer every record of a recorded-outcome file with every routing "
        "strategy through the server's router and cascade (replay backend, in-process, on "
        "virtual time), score the answers, and write DIR/report.json and DIR/frontier.png.",
    )
    _common(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument(
        "--trio",
        metavar="CHEAP,MID,TOP",
        default=None,
        help="recorded model keys to play the tiers (as in the data's models), e.g. "
        "claude-3-haiku-20240307,claude-3-sonnet-20240229,claude-3-opus-20240229: only "
        "the records holding all three are evaluated (default: the data's own trio)",
    )
    parser.add_argument(
        "--as-served",
        action="store_true",
        help="score the bundle a server loads (--model-dir, default routing.model_dir) as it "
        "serves: its ONNX models and operating points, no refit and no re-solving, against "
        "the always-one-tier baselines, per task (report.json and summary.md)",
    )
    parser.set_defaults(func=run_eval)


def add_calibrate_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `calibrate` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "calibrate",
        help="search thresholds, judge sampling and speculation toward a target",
        description="Search the classifier risk thresholds, the judge sample rate per query "
        "type and the speculative bound with k-fold cross-validation, toward a quality floor "
        "or a cost budget, and write a reviewable thresholds file plus a per-slice report. "
        "A value ending in x is relative to always using the top tier (e.g. 0.3333x).",
    )
    _common(parser)
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target-quality",
        metavar="Q",
        help="minimise cost with quality >= Q (0-1, or Qx times always-top's quality)",
    )
    target.add_argument(
        "--max-cost-per-query",
        metavar="C",
        help="maximise quality with cost per query <= C USD (or Cx times always-top's cost)",
    )
    parser.add_argument(
        "--operating-point",
        default=None,
        help="the operating point served by default: parity (quality >= always-top's, the "
        "default without a target), q95, third_cost, or custom (the target given, the "
        "default with one)",
    )
    parser.add_argument("--out", type=Path, required=True, help="thresholds file to write")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="per-slice error report to write (default: OUT with .slices.json)",
    )
    parser.add_argument(
        "--speculation-cost-share",
        type=float,
        default=None,
        help="most extra cost speculation may add, as a share (default 0.02)",
    )
    parser.add_argument(
        "--policy",
        choices=("value", "thresholds"),
        default="value",
        help="what decides a Cascade's start tier and judging: 'value' fits the value model "
        "(value.onnx, written beside --out) and searches its price of a correct answer; "
        "'thresholds' ships risk thresholds and judge sampling rates only (default: value)",
    )
    parser.set_defaults(func=run_calibrate)


def _options(args: argparse.Namespace, **extra: Any) -> Any:
    from tierroute.offline.evaluation.pipeline import Options

    if args.folds < 2:
        raise ConfigError("--folds must be at least 2")
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be positive")
    return Options(
        folds=args.folds,
        workers=args.workers,
        seed=args.seed,
        limit=args.limit,
        prices=args.prices,
        model_dir=args.model_dir,
        **extra,
    )


def progress_bar(
    quiet: bool, desc: str, unit: str = "answer"
) -> Callable[[int], Callable[[int], None]] | None:
    """A progress callback for long offline work on stderr (None when `quiet`)."""
    if quiet:
        return None

    def start(total: int) -> Callable[[int], None]:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, smoothing=0.1)

        def update(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return update

    return start


def _quiet_cascade_log() -> None:
    # The cascade logs one INFO line per request; over a whole file that is noise.
    logging.getLogger("tierroute.cascade").setLevel(logging.WARNING)


def run_eval(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run `tierroute eval`; 0 on success, 2 when the input cannot work."""
    from tierroute.offline.evaluation.as_served import evaluate_as_served, served_markdown
    from tierroute.offline.evaluation.pipeline import evaluate

    _quiet_cascade_log()
    started = time.perf_counter()
    run = evaluate_as_served if args.as_served else evaluate
    try:
        report = run(
            args.data or default_data_path(environ),
            args.out,
            settings,
            _options(args),
            progress=progress_bar(args.quiet, "eval as served" if args.as_served else "eval"),
            trio=args.trio.split(",") if args.trio else None,
        )
    except (ConfigError, ModelLoadError) as exc:
        print(f"tierroute eval: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    if args.as_served:
        print(served_markdown(report), file=sys.stderr)
        wrote = f"report.json and summary.md ({report['evaluation']})"
    else:
        print(_summary(report), file=sys.stderr)
        wrote = "report.json and frontier.png"
    print(f"wrote {args.out}/{wrote} in {elapsed:.1f} s", file=sys.stderr)
    return 0


def _summary(report: dict[str, Any]) -> str:
    lines = [f"{'strategy':22} {'quality':>8} {'$/query':>10} {'x top':>7} {'p95 ms':>8}"]
    for name, s in report["strategies"].items():
        ratio = s.get("cost_ratio_vs_always_expensive")
        lines.append(
            f"{name:22} {s['quality']:8.4f} {s['cost_per_query_usd']:10.6f} "
            f"{ratio if ratio is not None else float('nan'):7.3f} {s['p95_latency_ms']:8.0f}"
        )
    goal = report.get("goal")
    if goal:
        lines.append(
            f"goal ({goal['statement']}) on {goal['strategy']}: "
            f"{'met' if goal['met'] else 'not met'} (quality "
            f"{goal['quality_diff_vs_always_expensive']:+.4f}, SE "
            f"{goal.get('quality_diff_se') or 0:.4f}, cost "
            f"{goal['cost_ratio_vs_always_expensive']:.3f} x)"
        )
    from tierroute.offline.evaluation.usable import check_lines

    lines += check_lines(report)
    for name, g in report.get("goals", {}).items():
        low, high = g.get("quality_diff_ci95") or (float("nan"), float("nan"))
        lines.append(
            f"goal ({g['statement']}) on {name}: {'met' if g['met'] else 'not met'} "
            f"(quality {g['quality_ratio_vs_always_expensive']:.4f} x, diff "
            f"{g['quality_diff_vs_always_expensive']:+.4f} [{low:+.4f}, {high:+.4f}], "
            f"{g['times_cheaper']:.2f}x cheaper)"
        )
    return "\n".join(lines)


def run_calibrate(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run `tierroute calibrate`; 0 on success, 2 when the input or target cannot work."""
    from tierroute.offline.evaluation.calibration import CalibrationTarget
    from tierroute.offline.evaluation.pipeline import calibrate

    _quiet_cascade_log()
    started = time.perf_counter()
    data = args.data or default_data_path(environ)
    try:
        target = None
        if args.target_quality is not None:
            target = CalibrationTarget.parse("min_quality", args.target_quality)
        elif args.max_cost_per_query is not None:
            target = CalibrationTarget.parse("max_cost_per_query", args.max_cost_per_query)
        extra: dict[str, Any] = {"operating_point": args.operating_point}
        if args.speculation_cost_share is not None:
            if not 0 <= args.speculation_cost_share <= 1:
                raise ConfigError("--speculation-cost-share must be within [0, 1]")
            extra["speculation_cost_share"] = args.speculation_cost_share
        extra["policy"] = args.policy
        report_path = args.report or args.out.with_name(f"{args.out.stem}.slices.json")
        result = calibrate(
            data,
            args.out,
            settings,
            target,
            _options(args, **extra),
            report_path=report_path,
            progress=progress_bar(args.quiet, "calibrate"),
        )
    except (ConfigError, ModelLoadError) as exc:
        print(f"tierroute calibrate: error: {exc}", file=sys.stderr)
        return 2
    doc = result.thresholds
    held = doc["calibration"]["held_out"]
    points = doc["cascade"].get("value", {}).get("operating_points", {})
    listing = "".join(
        f"\n  operating point {name}: ${p['price_per_correct_usd']:.3g} per correct answer, "
        f"held out {p['held_out']['quality_vs_always_expensive']:+.4f} at "
        f"{p['held_out']['cost_ratio_vs_always_expensive']:.3f}x"
        for name, p in points.items()
    )
    print(
        f"wrote {args.out} and {report_path} in {time.perf_counter() - started:.1f} s\n"
        f"route risk {doc['risk']}, cascade "
        f"{ {k: v for k, v in doc['cascade'].items() if k != 'value'} } "
        f"({doc['cascade'].get('target', {}).get('statement', '')}){listing}\n"
        f"held out: quality {held['quality']:.4f} "
        f"({held['quality_vs_always_expensive']:+.4f} vs always-expensive), cost "
        f"{held['cost_ratio_vs_always_expensive']:.3f} x always-expensive",
        file=sys.stderr,
    )
    missed = [(n, p) for n, p in points.items() if p.get("attainable") is False]
    if missed:
        print(
            "tierroute calibrate: warning: no price meets the target of "
            + "; ".join(
                f"operating point {n} ({p['target']['statement']}): it takes the nearest grid "
                f"price, reaching quality {p['in_sample_quality']:.4f} at "
                f"${p['in_sample_cost_per_query_usd']:.6f} per query"
                for n, p in missed
            )
            + f" (marked attainable false in {args.out})",
            file=sys.stderr,
        )
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by `tierroute train` and `model_export/build.py`."""
    add_data_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    add_folds_argument(parser, what="cross-validation folds")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--max-cost-ratio",
        type=float,
        default=None,
        metavar="R",
        help="calibration target: maximise quality with average cost <= R x always-top-tier "
        "(default 1/3)",
    )
    target.add_argument(
        "--target-quality",
        type=float,
        default=None,
        metavar="Q",
        help="calibration target instead: minimise cost with quality >= Q x always-top-tier",
    )
    parser.add_argument(
        "--none-label",
        choices=("cheap", "drop"),
        default="cheap",
        help="records no tier got right: train them as cheap (default) or drop them",
    )
    parser.add_argument(
        "--prefix-chars",
        type=int,
        default=RoutingConfig().featurize_prefix_chars,
        help="characters of each prompt the classifier reads (default %(default)s)",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="skip cross-validating the other none-label policy for the report",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_train_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `train` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "train",
        help="train, calibrate and export a router model bundle",
        description="Train the router classifier on a recorded-outcome file, calibrate its "
        "thresholds by cross-validation, export it to ONNX and verify parity.",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run a training from parsed arguments; 0 on success, 2 when the input cannot work."""
    from tierroute.offline.training.calibrate import Target
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    data_path: Path = args.data or default_data_path(environ)
    started = time.perf_counter()
    try:
        if args.target_quality is not None:
            target = Target("min_quality_ratio", args.target_quality)
        else:
            ratio = args.max_cost_ratio
            target = Target("max_cost_ratio", DEFAULT_MAX_COST_RATIO if ratio is None else ratio)
        if args.prefix_chars < 1:
            raise ConfigError("--prefix-chars must be positive")
        options = TrainOptions(
            folds=args.folds,
            target=target,
            none_label=args.none_label,
            prefix_chars=args.prefix_chars,
            compare_none_labels=not args.no_compare,
            progress=not args.quiet,
        )
        result = train_bundle(data_path, args.out, options)
    except (ConfigError, ModelLoadError) as exc:
        print(f"tierroute train: error: {exc}", file=sys.stderr)
        return 2
    cv = result.metadata["cv"]
    honest = cv["calibrated_cross_fitted"]
    print(
        f"wrote {result.metadata['model_version']} to {args.out} in "
        f"{time.perf_counter() - started:.1f} s\n"
        f"thresholds {cv['risk']} ({cv['target']['statement']})\n"
        f"cross-fitted: quality {honest['quality']:.4f} "
        f"({honest['quality_vs_top']:.3f} x top), cost {honest['cost_vs_top']:.3f} x top, "
        f"mix {honest['mix']}",
        file=sys.stderr,
    )
    return 0
