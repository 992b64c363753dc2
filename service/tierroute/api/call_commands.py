"""`tierroute route` and `tierroute cascade`: call a running server and print what it decided.

Both go through the Python client (`tierroute_client`), so the command line, the client and
its users share one conversion of the responses; `--json` prints that conversion as it is.
`cascade --stream` prints the answer's text as it arrives (progress on stderr), and with
`--json` one JSON object per event.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tierroute_client import (
    CascadeEvent,
    CascadeOptions,
    CascadeResult,
    Final,
    HopFinished,
    HopStarted,
    Retract,
    RouteOptions,
    RouteResult,
    TextDelta,
    TierRouteClient,
    TierRouteClientError,
    Verdict,
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
    parser.add_argument(
        "--operating-point",
        default="",
        help="the value policy's operating point: parity (default), q95 or third_cost",
    )
    parser.add_argument("--strategy", choices=("heuristic", "classifier", "self_routing"))
    parser.add_argument("--start-tier", help="start on this tier instead of routing")
    parser.add_argument(
        "--speculation", choices=("unspecified", "on", "off"), default="unspecified"
    )
    parser.add_argument(
        "--judge",
        choices=("unspecified", "always", "never", "start_only", "agreement", "agreement_mid"),
        default="unspecified",
    )
    parser.add_argument(
        "--max-output-tokens", type=int, default=0, help="output tokens per answer call"
    )
    parser.add_argument(
        "--stream", action="store_true", help="CascadeStream: print the answer as it arrives"
    )
    parser.add_argument(
        "--drafts", action="store_true", help="with --stream: stream drafts, marking retracts"
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
    if args.max_output_tokens:
        options["max_output_tokens"] = args.max_output_tokens
    if args.operating_point:
        options["operating_point"] = args.operating_point
    if args.drafts:
        options["stream_drafts"] = True
    try:
        with TierRouteClient(_target(args, environ), retry=None) as client:
            if args.stream or args.drafts:
                return print_stream(client.cascade_stream(args.text, **options), args.json)
            result = client.cascade(args.text, **options)
    except TierRouteClientError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(_jsonable(result)))
    else:
        print(format_cascade(result))
    return 0


def print_stream(
    events: Iterable[CascadeEvent],
    as_json: bool,
    out: TextIO | None = None,
    progress: TextIO | None = None,
) -> int:
    """Print each event as it arrives: the text to `out`, hops and verdicts to `progress`.

    A retract is marked in the text, since what is printed cannot be taken back. With
    `as_json`, one JSON object per event, its `type` first.
    """
    out = out or sys.stdout
    progress = progress or sys.stderr
    for event in events:
        if as_json:
            print(json.dumps({"type": type(event).__name__, **dataclasses.asdict(event)}), file=out)
        elif isinstance(event, TextDelta):
            out.write(event.text)
        elif isinstance(event, Retract):
            out.write(f"\n[retracted: the {event.tier} draft ({event.reason})]\n")
        elif isinstance(event, Final):
            print("\n", file=out)
            print("\n".join(format_cascade(event.result).splitlines()[2:]), file=out)
        else:
            print(format_progress(event), file=progress, flush=True)
        out.flush()
    return 0


def format_progress(event: HopStarted | HopFinished | Verdict) -> str:
    """One progress line for a hop or a verdict."""
    if isinstance(event, HopStarted):
        spec = " speculative" if event.speculative else ""
        return f"[{event.index + 1}. {event.role} on {event.tier} started{spec}]"
    if isinstance(event, HopFinished):
        hop = event.hop
        return (
            f"[{event.index + 1}. {hop.role} on {hop.tier} {hop.outcome}: "
            f"{hop.input_tokens}+{hop.output_tokens} tok ${hop.cost_usd:.6f}]"
        )
    return f"[{event.judge_tier} judged the {event.answer_tier} answer: {event.verdict}]"


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
        cache = (
            f" cache +{hop.cache_creation_input_tokens}/{hop.cache_read_input_tokens} read"
            if hop.cache_creation_input_tokens or hop.cache_read_input_tokens
            else ""
        )
        lines.append(
            f"  {i}. {hop.role:6} {hop.tier:10} {hop.outcome:9}"
            f" {hop.input_tokens:>6}+{hop.output_tokens:<5} tok"
            f" ${hop.cost_usd:.6f} {hop.latency_ms:8.1f} ms{spec}{verdict}{error}{cache}"
        )
    lines += [f"  escalated: {r.code}: {r.detail}" for r in result.escalation_reasons]
    lines += [
        f"  tool call: {call['name']}({json.dumps(call['input'])}) id {call['id']}"
        for call in result.tool_calls
    ]
    lines.append(f"total ${result.total_cost_usd:.6f} in {result.total_latency_ms:.1f} ms")
    return "\n".join(lines)
