"""The `tierroute` command: serve, call the service, and train, evaluate and operate it.

Settings are built here, once, from the process environment, and handed to the command;
nothing reads the environment at import time. Each subcommand's module is imported only
when that subcommand runs, so `tierroute serve` loads no training or evaluation code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from tierroute.errors import TierrouteError
from tierroute.settings import Settings

logger = logging.getLogger("tierroute")


class Command(NamedTuple):
    """Where a subcommand lives: its module and the function that registers it."""

    module: str
    register: str
    summary: str


# Each module's register function adds the subcommand's parser and sets `func`, which runs
# it as func(args, settings, environ) and returns the exit code.
COMMANDS: Mapping[str, Command] = {
    "serve": Command("tierroute.api.serve_commands", "add_serve_parser", "run the gRPC server"),
    "route": Command(
        "tierroute.api.call_commands", "add_route_parser", "ask a server which tier should answer"
    ),
    "cascade": Command(
        "tierroute.api.call_commands",
        "add_cascade_parser",
        "answer a query through a server's judged cascade",
    ),
    "replay-server": Command(
        "tierroute.api.serve_commands",
        "add_replay_parser",
        "serve recorded answers as a local Anthropic Messages API",
    ),
    "hash-token": Command(
        "tierroute.api.serve_commands",
        "add_token_parser",
        "print the SHA-256 digest of a bearer token for the tokens file",
    ),
    "train": Command(
        "tierroute.offline.cli.modelling",
        "add_train_parser",
        "train a router model bundle on a recorded-outcome file",
    ),
    "eval": Command(
        "tierroute.offline.cli.modelling",
        "add_eval_parser",
        "replay recorded outcomes through every strategy; cost-quality report",
    ),
    "calibrate": Command(
        "tierroute.offline.cli.modelling",
        "add_calibrate_parser",
        "search the shipped thresholds toward a target, cross-validated",
    ),
    "report": Command(
        "tierroute.offline.cli.operations",
        "add_report_parser",
        "the query log's traffic, cost and quality per tier and model",
    ),
    "import": Command(
        "tierroute.offline.cli.traffic",
        "add_import_parser",
        "load a team's own LLM log (JSONL or CSV) into the query log, with its text",
    ),
    "label": Command(
        "tierroute.offline.cli.traffic",
        "add_label_parser",
        "run a sample of logged questions through every tier and judge the answers",
    ),
    "export": Command(
        "tierroute.offline.cli.traffic",
        "add_export_parser",
        "write the labelled sample as a recorded-outcome file",
    ),
    "audit": Command(
        "tierroute.offline.cli.operations",
        "add_audit_parser",
        "judge a sample of logged downward routes with the top tier",
    ),
    "drift": Command(
        "tierroute.offline.cli.operations",
        "add_drift_parser",
        "compare recent traffic with the model's training data",
    ),
    "retrain": Command(
        "tierroute.offline.cli.operations",
        "add_retrain_parser",
        "train a candidate on logged labels and promote it past a gate",
    ),
    "rollback": Command(
        "tierroute.offline.cli.operations",
        "add_rollback_parser",
        "promote the previous model version of a registry",
    ),
    "models": Command(
        "tierroute.offline.cli.operations",
        "add_models_parser",
        "list a model registry's versions and history",
    ),
    "split": Command(
        "tierroute.offline.cli.transfer",
        "add_split_parser",
        "cut a recorded-outcome file into a training and a held-out part",
    ),
    "transfer": Command(
        "tierroute.offline.cli.transfer",
        "add_transfer_parser",
        "per task: train and calibrate without it, serve the bundle on it as-is",
    ),
    "adapt": Command(
        "tierroute.offline.cli.operations",
        "add_adapt_parser",
        "re-solve the served model's operating points for the traffic in the query log",
    ),
}


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names, if it names a known one."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    name: str | None = known.command
    return name if name in COMMANDS else None


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The command line: every subcommand is listed, only `chosen` is loaded and complete."""
    parser = argparse.ArgumentParser(
        prog="tierroute",
        description="Route each LLM query to the cheapest model tier that answers it; serve, "
        "call, train, evaluate and operate the router.",
    )
    parser.add_argument(
        "--log-level", default=None, help="log level (default $TIERROUTE_LOG_LEVEL or INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if name == chosen:
            register = getattr(importlib.import_module(command.module), command.register)
            register(sub)
        else:
            sub.add_parser(name, help=command.summary)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the `tierroute` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    parser = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    level = (args.log_level or environ.get("TIERROUTE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The SDK's HTTP client logs every request at INFO; provider calls are already in spans,
    # metrics and the query log, so keep the server log to what tierroute itself reports.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        settings = Settings.from_env(environ)
        code: int = args.func(args, settings, environ)
    except TierrouteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`tierroute cascade --stream | head`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
