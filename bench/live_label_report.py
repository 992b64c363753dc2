"""Live labelling end to end, and the savings report it feeds: a real server with
`[shadow] label_rate = 1` answers N dev questions through Cascade over the replay backend,
labels every call in the background, and `tierroute report` reads the result.

    .venv/bin/python bench/live_label_report.py [--n 200] [--budget-usd 20] [--seed 0]

The server is the one `tierroute serve` builds (shipped bundle, configured Claude ladder,
replay backend at time scale 0, query log in a scratch SQLite file). The questions are a
seeded sample of dev, sent as a client would (text only); the labels never read `correct`.
Prints the report's savings section and live labelling's own counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def _run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[str]]:
    from grpc import aio

    from tierroute.api.server import TierRouteServer
    from tierroute.offline.cli.operations import build_report
    from tierroute.outcomes import iter_records
    from tierroute.querylog.savings import format_savings
    from tierroute.settings import Settings
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    records = list(iter_records(args.data))
    questions = [
        r.get("prompt_sent") or r["prompt"]
        for r in random.Random(args.seed).sample(records, args.n)
    ]
    url = f"sqlite:///{work / 'log.sqlite3'}"
    settings = Settings.from_env(
        {
            "TIERROUTE_REPLAY_DATA": str(args.data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": url,
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(work / "spool.jsonl"),
            "TIERROUTE_HTTP_PORT": "0",
            "TIERROUTE_SHADOW_LABEL_RATE": "1.0",
            "TIERROUTE_SHADOW_LABEL_BUDGET_USD": str(args.budget_usd),
            "TIERROUTE_SHADOW_LABEL_MAX_PENDING": str(args.n),
        }
    )
    server = TierRouteServer(settings, environ={"ANTHROPIC_API_KEY": ""})
    port = await server.start("127.0.0.1", 0)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TierRouterStub(channel)
            for i, text in enumerate(questions):
                await stub.Cascade(pb.CascadeRequest(query=text, request_id=f"live-{i}"))
        assert server.labels is not None
        await server.labels.wait_idle()
        stats = vars(server.labels.stats).copy()
        budget = {"limit": server.labels.budget.limit, "spent": server.labels.budget.spent}
    finally:
        await server.stop(0)
    tiers = tuple(t.name for t in settings.tiers)
    report = await build_report(url, tiers, None, settings.routing.reference_tier)
    doc = {
        "questions": args.n,
        "live_labelling": stats,
        "budget_usd": budget,
        "savings": None if report.savings is None else report.savings.to_json(),
    }
    return doc, format_savings(report.savings)


def main() -> int:
    """Run the demonstration and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev.jsonl.gz"
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--budget-usd", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tierroute-live-") as tmp:
        doc, lines = asyncio.run(_run(args, Path(tmp)))
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
