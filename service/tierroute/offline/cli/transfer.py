"""The `tierroute split` and `tierroute transfer` subcommands: honest as-served checks.

`split` cuts a recorded-outcome file in two (a share of its duplicate groups, or whole
tasks) for the product's own commands to train and calibrate on one part and
`eval --as-served` to serve on the other. `transfer` does all of it per part: for each task
T (or one share of the file), split, then the same commands `make model` runs (the training
of model_export/build.py, then `tierroute calibrate` with the Makefile's options) on the
rest, then `eval --as-served` on the part; one table of the results (`make transfer`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierroute.errors import ConfigError
from tierroute.offline.cli.args import add_data_argument
from tierroute.outcomes import default_data_path
from tierroute.settings import Settings

if TYPE_CHECKING:
    from tierroute.offline.evaluation.split import SplitRule

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
    Command = Callable[[argparse.Namespace, Settings, Mapping[str, str]], int]


def _split_rule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        metavar="F",
        help="hold out this share of the duplicate groups (dup_group, else the record)",
    )
    parser.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="TASK",
        help="hold out this task (repeat or comma-separate; train on every other task)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cut (default 0)")


def add_split_parser(subparsers: Subparsers) -> None:
    """Register `split` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "split",
        help="cut a recorded-outcome file into a training and a held-out part",
        description="Write OUT/train.jsonl.gz and OUT/holdout.jsonl.gz (duplicate groups kept "
        "on one side) and OUT/split.json, for training and calibrating on one part and "
        "`eval --as-served` on the other.",
    )
    add_data_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    _split_rule_arguments(parser)
    parser.set_defaults(func=run_split)


def run_split(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run `tierroute split`; 0 on success, 2 when the input cannot work."""
    from tierroute.offline.evaluation.split import SplitRule, parse_tasks, split_file

    data = args.data or default_data_path(environ)
    try:
        rule = SplitRule(args.holdout_fraction or 0.0, args.seed, parse_tasks(args.task))
        description = split_file(data, args.out, rule)
    except ConfigError as exc:
        print(f"tierroute split: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {description['records']['train']} records to train on, "
        f"{description['records']['holdout']} held out ({description['rule']})",
        file=sys.stderr,
    )
    return 0


def add_transfer_parser(subparsers: Subparsers) -> None:
    """Register `transfer` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "transfer",
        help="per task: train and calibrate without it, serve the bundle on it as-is",
        description="For each task T of the data (or, with --holdout-fraction, one share of "
        "its duplicate groups): split, train and calibrate a bundle on the rest with the "
        "commands `make model` runs, then `eval --as-served` on the held-out part. Writes "
        "OUT/<part>/ and OUT/transfer.json, and prints one table.",
    )
    add_data_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    _split_rule_arguments(parser)
    parser.add_argument(
        "--prices",
        default="config",
        metavar="LADDER",
        help="the ladder calibration and evaluation price with (as eval's; default config)",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_transfer)


def _parts(args: argparse.Namespace, data: Path) -> list[tuple[str, SplitRule]]:
    from tierroute.offline.evaluation.split import SplitRule, parse_tasks, tasks_of

    if args.holdout_fraction is not None:
        if args.task:
            raise ConfigError("give --task or --holdout-fraction, not both")
        name = f"{args.holdout_fraction:g} of the groups"
        return [(name, SplitRule(args.holdout_fraction, args.seed))]
    tasks = parse_tasks(args.task) or tuple(tasks_of(data))
    if len(tasks_of(data)) < 2:
        raise ConfigError(f"{data}: transfer needs at least two tasks to hold one out")
    return [(task, SplitRule(seed=args.seed, holdout_tasks=(task,))) for task in tasks]


def _run(
    add: Callable[[Subparsers], None],
    argv: Sequence[str],
    settings: Settings,
    env: Mapping[str, str],
) -> None:
    """One of the product's commands, parsed and run as the command line runs it."""
    parser = argparse.ArgumentParser(prog="tierroute")
    add(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    func: Command = args.func
    if func(args, settings, env) != 0:
        raise ConfigError(f"`tierroute {' '.join(argv)}` failed (its error is above)")


def run_transfer(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run `tierroute transfer`; 0 on success, 2 when the input cannot work."""
    from tierroute.offline.evaluation.as_served import reference_tier
    from tierroute.offline.evaluation.split import split_file
    from tierroute.offline.evaluation.summary import write_json
    from tierroute.offline.evaluation.transfer import (
        TRANSFER_FILE,
        transfer_document,
        transfer_markdown,
        transfer_row,
    )

    started = time.perf_counter()
    data = args.data or default_data_path(environ)
    quiet = ["--quiet"] if args.quiet else []
    common = ["--prices", args.prices, "--workers", str(args.workers), "--folds", str(args.folds)]
    rows: list[dict[str, Any]] = []
    reference = reference_tier(settings)
    document: dict[str, Any] = {}
    try:
        parts = _parts(args, data)
    except ConfigError as exc:
        print(f"tierroute transfer: error: {exc}", file=sys.stderr)
        return 2
    for part, rule in parts:
        where = args.out / part.replace(" ", "_")
        try:
            split = split_file(data, where, rule)
            print(f"transfer: {part}: {split['rule']}", file=sys.stderr)
            report = _serve_part(
                where, args, quiet=quiet, common=common, settings=settings, environ=environ
            )
            rows.append(transfer_row(part, split, report))
        except ConfigError as exc:
            # A part the product's commands cannot train, calibrate or serve is a result
            # (the table says why), not the end of the other parts.
            print(f"transfer: {part}: {exc}", file=sys.stderr)
            rows.append({"part": part, "rule": rule.statement(), "error": str(exc)})
        # Written after every part, so a long run's finished parts can be read early.
        document = transfer_document(
            rows, source=data.name, prices=args.prices, reference={"tier": reference}
        )
        document["wall_time_s"] = round(time.perf_counter() - started, 1)
        write_json(args.out / TRANSFER_FILE, document)
    print(transfer_markdown(document), file=sys.stderr)
    print(f"wrote {args.out / TRANSFER_FILE}", file=sys.stderr)
    return 0


def _serve_part(
    where: Path,
    args: argparse.Namespace,
    *,
    quiet: list[str],
    common: list[str],
    settings: Settings,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Train and calibrate on `where`/train.jsonl.gz as `make model` does, serve the bundle
    as-is on `where`/holdout.jsonl.gz; the as-served report."""
    import json

    from tierroute.offline.cli.modelling import (
        add_calibrate_parser,
        add_eval_parser,
        add_train_parser,
    )
    from tierroute.offline.evaluation.summary import REPORT_FILE

    train, held, bundle = where / "train.jsonl.gz", where / "holdout.jsonl.gz", where / "bundle"
    # What `make model` runs: model_export/build.py's training (whose report's comparison
    # of the other none-label policy is skipped: it changes no file the server loads), then
    # calibrate with the Makefile's options.
    _run(
        add_train_parser,
        [
            *("train", "--data", str(train), "--out", str(bundle)),
            *("--folds", str(args.folds), "--no-compare", *quiet),
        ],
        settings,
        environ,
    )
    _run(
        add_calibrate_parser,
        [
            *("calibrate", "--data", str(train), "--model-dir", str(bundle)),
            *("--out", str(bundle / "thresholds.json")),
            *("--report", str(where / "calibration_slices.json"), *common, *quiet),
        ],
        settings,
        environ,
    )
    _run(
        add_eval_parser,
        [
            *("eval", "--as-served", "--data", str(held), "--model-dir", str(bundle)),
            *("--out", str(where / "eval"), *common, *quiet),
        ],
        settings,
        environ,
    )
    report: dict[str, Any] = json.loads((where / "eval" / REPORT_FILE).read_text("utf-8"))
    return report
