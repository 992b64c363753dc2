"""`tierroute route` and `tierroute cascade`: call a running server and print what it decided.

Both go through the Python client (`tierroute_client`), so the command line, the client and
its users share one conversion of the responses; `--json` prints that conversion as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from typing import Any

from tierroute_client import (
    CascadeOptions,
    CascadeResult,
    RouteOptions,
    RouteResult,
    TierRouteClient,
    TierRouteClientError,
)

from tierroute.settings import Settings

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "TIERROUTE_TARGET"


def _common(parser: argparse.ArgumentParser, *, timeout: float) -> None:
    parser.add_argument("text")
    parser.add_argument(
        "--target",
        help=f"server address (default ${TARGET_ENV} or {DEFAULT_TARGET})",
    )
    parser.add_argument("--session", help="session id, for sticky routing")
    parser.add_argument("--timeout", type=float, default=timeout, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_route_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `route`."""
    parser = subparsers.add_parser(
        "route", description="Ask a server which tier should answer a query."
    )
    _common(parser, timeout=10.0)
    parser.add_argument("--strategy", choices=("heuristic", "classifier"))
    parser.add_argument("--rule", choices=("calibrated", "published"))
    parser.add_argument("--quality-floor", type=float, default=0.0)
    parser.add_argument("--max-cost", type=float, default=0.0, help="cost ceiling in USD")
    parser.set_defaults(func=run_route)


def add_cascade_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `cascade`."""
    parser = subparsers.add_parser(
        "cascade", description="Answer a query through the judged cascade of a server."
    )
    _common(parser, timeout=120.0)
    parser.add_argument("--strategy", choices=("heuristic", "classifier", "self_routing"))
    parser.add_argument("--start-tier", help="start on this tier instead of routing")
    parser.add_argument(
        "--speculation", choices=("unspecified", "on", "off"), default="unspecified"
    )
    parser.add_argument(
        "--judge", choices=("unspecified", "always", "never", "start_only"), default="unspecified"
    )
    parser.set_defaults(func=run_cascade)


def _target(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    return str(args.target or environ.get(TARGET_ENV) or DEFAULT_TARGET)


def _fail(exc: TierRouteClientError) -> int:
    print(f"error: {exc.code.name}: {exc.details}", file=sys.stderr)
    return 1


def run_route(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Call Route once and print the decision."""
    options: RouteOptions = {"timeout": args.timeout}
    if args.strategy:
        options["strategy"] = args.strategy
    if args.rule:
        options["rule"] = args.rule
    if args.quality_floor:
        options["quality_floor"] = args.quality_floor
    if args.max_cost:
        options["max_cost_usd"] = args.max_cost
    if args.session:
        options["session_id"] = args.session
    try:
        with TierRouteClient(_target(args, environ), retry=None) as client:
            result = client.route(args.text, **options)
    except TierRouteClientError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(_jsonable(result)))
    else:
        print(format_route(result))
    return 0


def run_cascade(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Call Cascade once and print the answer with every hop."""
    options: CascadeOptions = {"timeout": args.timeout}
    if args.strategy:
        options["strategy"] = args.strategy
    if args.start_tier:
        options["start_tier"] = args.start_tier
    if args.speculation != "unspecified":
        options["speculation"] = args.speculation == "on"
    if args.judge != "unspecified":
        options["judge"] = args.judge
    if args.session:
        options["session_id"] = args.session
    try:
        with TierRouteClient(_target(args, environ), retry=None) as client:
            result = client.cascade(args.text, **options)
    except TierRouteClientError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(_jsonable(result)))
    else:
        print(format_cascade(result))
    return 0


def _jsonable(result: RouteResult | CascadeResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def format_route(result: RouteResult) -> str:
    """The decision as a few aligned lines."""
    lines = [
        f"tier      {result.tier} ({result.model})",
        f"strategy  {result.strategy}" + (f", rule {result.rule}" if result.rule else ""),
        "scores    " + "  ".join(f"{k}={v:.3f}" for k, v in result.scores.items()),
    ]
    lines += [f"reason    {r.code}: {r.detail}" for r in result.reasons]
    if result.model_version:
        lines.append(f"model     {result.model_version}")
    lines.append(
        f"decided   in {result.decision_time_us} us; est. cost ${result.estimated_cost_usd:.6f}"
    )
    return "\n".join(lines)


def format_cascade(result: CascadeResult) -> str:
    """The answer, then one line per hop and the totals."""
    status = result.judge_status + (" (degraded)" if result.degraded else "")
    lines = [result.answer, "", f"answered by {result.tier} ({result.model}); judge {status}"]
    for i, hop in enumerate(result.hops, 1):
        verdict = f" verdict={hop.verdict}" if hop.role == "judge" else ""
        error = f" error={hop.error_kind}" if hop.error_kind else ""
        spec = " speculative" if hop.speculative else ""
        lines.append(
            f"  {i}. {hop.role:6} {hop.tier:10} {hop.outcome:9}"
            f" {hop.input_tokens:>6}+{hop.output_tokens:<5} tok"
            f" ${hop.cost_usd:.6f} {hop.latency_ms:8.1f} ms{spec}{verdict}{error}"
        )
    lines += [f"  escalated: {r.code}: {r.detail}" for r in result.escalation_reasons]
    lines.append(f"total ${result.total_cost_usd:.6f} in {result.total_latency_ms:.1f} ms")
    return "\n".join(lines)
