"""Day one on traffic unlike dev's: easy developer questions through a served bundle, and
whether its familiarity signal separates open-ended traffic from dev's.

    .venv/bin/python bench/unfamiliar_bench.py [--model-dir model_export/bundle]
        [--questions tests/easy_questions.txt]
        [--ood ../shared/data/ood/arena_bench_v1.jsonl.gz] [--json out/unfamiliar.json]

1. The questions of `--questions` (tests/easy_questions.txt: 30 of the seed article's kind,
   "How do I reverse a list in Python?", "What is the capital of France?", ...) go through
   the Cascade and the Route RPC of a real server (the factory `tierroute serve` uses, on
   127.0.0.1, its replay backend answering instantly) loaded with the bundle in
   `--model-dir`, under the configured
   `routing.on_unfamiliar` (TIERROUTE_ROUTING_ON_UNFAMILIAR). Reported: where each Cascade
   started, and what Route named.
2. The bundle's familiarity on the prompts of `--ood` (open-ended chat and coding prompts),
   against the held-out share of dev the bundle's threshold flags (thresholds.json
   `familiarity.held_out_flagged`: per fold, the signal fitted without the fold). Prompts
   only are read; nothing reads `correct`, `score` or `reference_answer`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from grpc import aio

from tierroute.api.server import TierRouteServer
from tierroute.model import load_model
from tierroute.outcomes import iter_records
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

# The seed article's kind of question, one a line: the test fixture tests/system uses too.
QUESTIONS_FILE = Path("tests/easy_questions.txt")


def read_questions(path: Path) -> tuple[str, ...]:
    """The non-empty lines of `path`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


async def through_server(model_dir: Path, questions: tuple[str, ...]) -> dict[str, Any]:
    """Cascade and Route every question through a real server with the bundle."""
    environ = {
        **{k: v for k, v in os.environ.items() if k.startswith("TIERROUTE_ROUTING_")},
        "TIERROUTE_MODEL_DIR": str(model_dir),
        "TIERROUTE_QUERYLOG_ENABLED": "false",
        "TIERROUTE_HTTP_PORT": "0",
        "TIERROUTE_REPLAY_TIME_SCALE": "0",
        "TIERROUTE_ANTHROPIC_BACKEND": "replay",
    }
    settings = Settings.from_env(environ)
    server = TierRouteServer(settings, environ={"TIERROUTE_DATA": "/nonexistent"})
    port = await server.start("127.0.0.1", 0)
    starts: Counter[str] = Counter()
    routes: Counter[str] = Counter()
    unfamiliar = 0
    rows = []
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TierRouterStub(channel)
            for question in questions:
                c = await stub.Cascade(pb.CascadeRequest(query=question))
                r = await stub.Route(pb.RouteRequest(query=question))
                start = c.route.tier.name
                starts[start] += 1
                routes[r.tier.name] += 1
                flagged = any(x.code == pb.REASON_CODE_UNFAMILIAR_QUERY for x in c.route.reasons)
                unfamiliar += flagged
                rows.append(
                    {
                        "question": question,
                        "familiarity": round(c.route.features.familiarity, 4),
                        "unfamiliar": flagged,
                        "cascade_start": start,
                        "route": r.tier.name,
                    }
                )
    finally:
        await server.stop(0)
    tiers = [t.name for t in settings.tiers]
    n = len(questions)
    return {
        "on_unfamiliar": settings.routing.on_unfamiliar,
        "questions": n,
        "unfamiliar": unfamiliar,
        "cascade_start": {t: starts[t] for t in tiers},
        "route": {t: routes[t] for t in tiers},
        "goals": {
            "none_start_on_top": starts[tiers[-1]] == 0,
            "cheap_start_share": starts[tiers[0]] / n,
            "cheap_start_at_least_80_percent": starts[tiers[0]] >= 0.8 * n,
        },
        "rows": rows,
    }


def separation(model_dir: Path, ood: Path, n_tiers: int) -> dict[str, Any]:
    """The share of `ood`'s prompts the served bundle flags, against dev's held-out share."""
    scorer = load_model(model_dir, n_tiers).scorer
    threshold = scorer.familiarity_threshold
    if threshold is None:
        raise SystemExit(f"{model_dir}: the bundle has no familiarity signal")
    section = scorer.calibration.get("familiarity", {})
    by_type: dict[str, list[bool]] = {}
    scores = []
    for record in iter_records(ood):
        value = scorer.score(str(record["prompt"])).familiarity
        assert value is not None
        scores.append(value)
        by_type.setdefault(str(record.get("task_type", "")), []).append(value < threshold)
    flagged = sum(s < threshold for s in scores)
    ordered = sorted(scores)
    return {
        "threshold": threshold,
        "dev_held_out_flagged": section.get("held_out_flagged"),
        "dev_held_out_median": section.get("held_out_quantiles", {}).get("0.5"),
        "ood_file": ood.name,
        "ood_prompts": len(scores),
        "ood_flagged": flagged / len(scores),
        "ood_median": ordered[len(ordered) // 2],
        "ood_flagged_by_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())},
    }


def main(argv: list[str] | None = None) -> int:
    """Run both measures and print them (and write them with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("model_export/bundle"))
    parser.add_argument(
        "--ood", type=Path, default=Path("../shared/data/ood/arena_bench_v1.jsonl.gz")
    )
    parser.add_argument("--questions", type=Path, default=QUESTIONS_FILE, help="one a line")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"model_dir": str(args.model_dir)}
    questions = read_questions(args.questions)
    report["easy_questions"] = asyncio.run(through_server(args.model_dir, questions))
    if args.ood.is_file():
        report["separation"] = separation(args.model_dir, args.ood, 3)
    easy = report["easy_questions"]
    print(
        f"easy questions ({easy['questions']}, on_unfamiliar={easy['on_unfamiliar']}): "
        f"{easy['unfamiliar']} unfamiliar; Cascade starts {easy['cascade_start']}; "
        f"Route {easy['route']}"
    )
    if "separation" in report:
        s = report["separation"]
        print(
            f"familiarity < {s['threshold']:.3f}: {s['ood_flagged']:.1%} of {s['ood_prompts']} "
            f"{s['ood_file']} prompts (by type {s['ood_flagged_by_type']}) against "
            f"{s['dev_held_out_flagged']:.1%} of held-out dev rows (cross-validated)"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
