"""The `tierroute train` subcommand: train a router model bundle on any recorded-outcome file.

Registering the subcommand imports nothing heavy; scikit-learn and skl2onnx load only when
`train` runs, so `tierroute serve` never pays for them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tierroute.data import add_data_argument, add_folds_argument, default_data_path
from tierroute.errors import ConfigError, ModelLoadError
from tierroute.settings import RoutingConfig
from tierroute.training.calibrate import DEFAULT_MAX_COST_RATIO


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


def run_train(args: argparse.Namespace) -> int:
    """Run a training from parsed arguments; 0 on success, 2 when the input cannot work."""
    from tierroute.training.bundle import TrainOptions, train_bundle
    from tierroute.training.calibrate import Target

    data_path: Path = args.data or default_data_path(os.environ)
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
