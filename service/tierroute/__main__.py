"""The `tierroute` command: serve, call the service, and train, evaluate and operate it.

Settings are built here, once, from the process environment; nothing reads the
environment at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from tierroute.errors import TierrouteError
from tierroute.settings import Settings

logger = logging.getLogger("tierroute")

DEFAULT_TARGET = "127.0.0.1:50051"


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _cmd_serve(args: argparse.Namespace) -> int:
    from tierroute.server import serve

    settings = _settings()
    asyncio.run(serve(settings, args.host, args.port))
    return 0


def _route_json(response: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    from tierroute.v1 import tierroute_pb2 as pb

    return {
        "request_id": response.request_id,
        "tier": response.tier.name,
        "model": response.tier.model,
        "strategy": pb.Strategy.Name(response.strategy).removeprefix("STRATEGY_").lower(),
        "rule": pb.DecisionRule.Name(response.rule).removeprefix("DECISION_RULE_").lower(),
        "scores": {s.tier: round(s.probability, 6) for s in response.scores},
        "confidence": round(response.confidence, 6),
        "thresholds": dict(response.thresholds),
        "reasons": [
            {"code": pb.ReasonCode.Name(r.code).removeprefix("REASON_CODE_"), "detail": r.detail}
            for r in response.reasons
        ],
        "model_version": response.model_version,
        "decision_time_us": response.decision_time_us,
        "estimated_cost_usd": response.estimated_cost_usd,
        "features": MessageToDict(response.features, preserving_proto_field_name=True),
    }


def _cmd_route(args: argparse.Namespace) -> int:
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    request = pb.RouteRequest(
        query=args.text,
        strategy=pb.Strategy.Value(f"STRATEGY_{(args.strategy or 'unspecified').upper()}"),
        policy=pb.RoutingPolicy(
            rule=pb.DecisionRule.Value(f"DECISION_RULE_{(args.rule or 'unspecified').upper()}"),
            quality_floor=args.quality_floor,
            max_cost_usd=args.max_cost,
        ),
        session_id=args.session or "",
    )
    with grpc.insecure_channel(args.target) as channel:
        response = pb_grpc.TierRouterStub(channel).Route(request, timeout=args.timeout)
    result = _route_json(response)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"tier      {result['tier']} ({result['model']})")
    print(
        f"strategy  {result['strategy']}"
        + (f", rule {result['rule']}" if result["rule"] != "unspecified" else "")
    )
    print("scores    " + "  ".join(f"{k}={v:.3f}" for k, v in result["scores"].items()))
    for r in result["reasons"]:
        print(f"reason    {r['code']}: {r['detail']}")
    if result["model_version"]:
        print(f"model     {result['model_version']}")
    cost = result["estimated_cost_usd"]
    print(f"decided   in {result['decision_time_us']} us; est. cost ${cost:.6f}")
    return 0


def _cascade_json(response: Any) -> dict[str, Any]:
    from tierroute.v1 import tierroute_pb2 as pb

    def name(enum: Any, value: int, prefix: str) -> str:
        return str(enum.Name(value)).removeprefix(prefix).lower()

    return {
        "request_id": response.request_id,
        "answer": response.answer,
        "tier": response.tier.name,
        "model": response.tier.model,
        "hops": [
            {
                "tier": h.tier,
                "model": h.model,
                "role": name(pb.HopRole, h.role, "HOP_ROLE_"),
                "outcome": name(pb.HopOutcome, h.outcome, "HOP_OUTCOME_"),
                "input_tokens": h.input_tokens,
                "output_tokens": h.output_tokens,
                "cost_usd": h.cost_usd,
                "latency_ms": round(h.latency_ms, 3),
                "verdict": name(pb.JudgeVerdict, h.verdict, "JUDGE_VERDICT_"),
                "issues": list(h.issues),
                "attempt": h.attempt,
                "speculative": h.speculative,
                "error_kind": h.error_kind,
                "stop_reason": h.stop_reason,
            }
            for h in response.hops
        ],
        "total_cost_usd": response.total_cost_usd,
        "total_latency_ms": round(response.total_latency_ms, 3),
        "escalated": response.escalated,
        "escalation_reasons": [
            {"code": name(pb.ReasonCode, r.code, "REASON_CODE_").upper(), "detail": r.detail}
            for r in response.escalation_reasons
        ],
        "judge_status": name(pb.JudgeStatus, response.judge_status, "JUDGE_STATUS_"),
        "degraded": response.degraded,
        "degraded_reasons": list(response.degraded_reasons),
        "route": _route_json(response.route) if response.HasField("route") else None,
    }


def _cmd_cascade(args: argparse.Namespace) -> int:
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    request = pb.CascadeRequest(
        query=args.text,
        strategy=pb.Strategy.Value(f"STRATEGY_{(args.strategy or 'unspecified').upper()}"),
        start_tier=args.start_tier or "",
        speculation=pb.SpeculationMode.Value(f"SPECULATION_MODE_{args.speculation.upper()}"),
        judge_mode=pb.JudgeMode.Value(f"JUDGE_MODE_{args.judge.upper()}"),
        session_id=args.session or "",
    )
    with grpc.insecure_channel(args.target) as channel:
        response = pb_grpc.TierRouterStub(channel).Cascade(request, timeout=args.timeout)
    result = _cascade_json(response)
    if args.json:
        print(json.dumps(result))
        return 0
    print(result["answer"])
    print()
    status = result["judge_status"] + (" (degraded)" if result["degraded"] else "")
    print(f"answered by {result['tier']} ({result['model']}); judge {status}")
    for i, hop in enumerate(result["hops"], 1):
        verdict = f" verdict={hop['verdict']}" if hop["role"] == "judge" else ""
        error = f" error={hop['error_kind']}" if hop["error_kind"] else ""
        spec = " speculative" if hop["speculative"] else ""
        print(
            f"  {i}. {hop['role']:6} {hop['tier']:10} {hop['outcome']:9}"
            f" {hop['input_tokens']:>6}+{hop['output_tokens']:<5} tok"
            f" ${hop['cost_usd']:.6f} {hop['latency_ms']:8.1f} ms{spec}{verdict}{error}"
        )
    for r in result["escalation_reasons"]:
        print(f"  escalated: {r['code']}: {r['detail']}")
    print(f"total ${result['total_cost_usd']:.6f} in {result['total_latency_ms']:.1f} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, subcommand by subcommand."""
    parser = argparse.ArgumentParser(prog="tierroute", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("TIERROUTE_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", default=None, help="bind address (default from config)")
    serve.add_argument("--port", type=int, default=None, help="port (default from config)")
    serve.set_defaults(func=_cmd_serve)

    route = sub.add_parser("route", help="ask a server which tier should answer a query")
    route.add_argument("text")
    route.add_argument("--target", default=os.environ.get("TIERROUTE_TARGET", DEFAULT_TARGET))
    route.add_argument("--strategy", choices=("heuristic", "classifier"))
    route.add_argument("--rule", choices=("calibrated", "published"))
    route.add_argument("--quality-floor", type=float, default=0.0)
    route.add_argument("--max-cost", type=float, default=0.0, help="cost ceiling in USD")
    route.add_argument("--session", help="session id, for sticky routing")
    route.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    route.add_argument("--json", action="store_true", help="print one JSON object")
    route.set_defaults(func=_cmd_route)

    cascade = sub.add_parser("cascade", help="answer a query through the judged cascade")
    cascade.add_argument("text")
    cascade.add_argument("--target", default=os.environ.get("TIERROUTE_TARGET", DEFAULT_TARGET))
    cascade.add_argument("--strategy", choices=("heuristic", "classifier", "self_routing"))
    cascade.add_argument("--start-tier", help="start on this tier instead of routing")
    cascade.add_argument(
        "--speculation", choices=("unspecified", "on", "off"), default="unspecified"
    )
    cascade.add_argument(
        "--judge",
        choices=("unspecified", "always", "never", "start_only"),
        default="unspecified",
    )
    cascade.add_argument("--session", help="session id")
    cascade.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    cascade.add_argument("--json", action="store_true", help="print one JSON object")
    cascade.set_defaults(func=_cmd_cascade)

    from tierroute.evaluation.cli import add_calibrate_parser, add_eval_parser
    from tierroute.ops_cli import (
        add_audit_parser,
        add_drift_parser,
        add_models_parser,
        add_retrain_parser,
        add_rollback_parser,
    )
    from tierroute.querylog.cli import add_report_parser
    from tierroute.replay.cli import add_replay_parser
    from tierroute.security import add_token_parser
    from tierroute.training.cli import add_train_parser

    add_train_parser(sub)
    add_replay_parser(sub)
    add_token_parser(sub)
    add_report_parser(sub)
    for add in (
        add_eval_parser,
        add_calibrate_parser,
        add_audit_parser,
        add_drift_parser,
        add_retrain_parser,
        add_rollback_parser,
        add_models_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tierroute` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The SDK's HTTP client logs every request at INFO; provider calls are already in spans,
    # metrics and the query log, so keep the server log to what tierroute itself reports.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        code: int = args.func(args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except TierrouteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
