"""An easy-traffic team: one task's records served through a real server, `tierroute adapt`
run on that server's own query log, and the same records served again.

    .venv/bin/python bench/adapt_bench.py [--task gsm8k] [--model-dir DIR] [--limit N] [--json]

What it does:

1. Writes the task's records of the data file (`--data`, default the Makefile's DATA) with
   `correct`, `reference_answer` and `min_tier_correct` removed, for the replay backend to
   serve. Tiers and prices are the shipped configuration (the Claude ladder); the replay
   backend answers with the recorded default trio.
2. Starts the server (`TierRouteServer`, the factory `tierroute serve` uses) on port 0 with
   a model registry seeded from `--model-dir` (default: the shipped bundle), the query log
   on a SQLite file and `routing.registry_poll_s` > 0, and sends every prompt through the
   Cascade RPC over a real channel (the default operating point, no other policy).
3. Runs `tierroute adapt --db ... --registry ... --since all --json` (the command, in a
   subprocess) on that log: a new version is promoted. The running server picks it up
   through its registry watcher (no restart), and the prompts are served again.
4. Scores each answer by the answering tier's recorded outcome (this script is the only
   reader of `correct`), cost = the response's `total_cost_usd`. The baselines are the same
   prompts through the same server with `start_tier` set and `JUDGE_MODE_NEVER`.

The bundle the shipped server loads was trained and calibrated on all of dev, so on dev's
records it has seen the prompts: say so when quoting the figures; with a bundle trained
without the task (`--model-dir`), they are as served on a task the model never saw.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grpc import aio

from tierroute.api.server import TierRouteServer
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
TRUTH_FIELDS = ("reference_answer", "min_tier_correct")
TRIO_KEYS = ("cheap", "mid", "expensive")


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in TRUTH_FIELDS}
    out["models"] = {
        name: {k: v for k, v in m.items() if k != "correct"} for name, m in record["models"].items()
    }
    return out


def load_task(path: Path, task: str, limit: int | None) -> list[dict[str, Any]]:
    """The task's records, in file order, at most `limit`."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record.get("task") == task:
                out.append(record)
                if limit is not None and len(out) >= limit:
                    break
    return out


def correct_of(record: dict[str, Any], tier_index: int) -> int:
    """The recorded outcome of the model the replay backend answers with on that tier."""
    model = record["tiers"][TRIO_KEYS[min(tier_index, 2)]]
    return int(record["models"][model]["correct"])


async def serve_all(
    stub: Any, records: list[dict[str, Any]], concurrency: int, **request: Any
) -> list[tuple[int, float, int]]:
    """Per record: the answering tier's index, the Cascade's cost, its start tier's index."""
    gate = asyncio.Semaphore(concurrency)

    async def one(record: dict[str, Any]) -> tuple[int, float, int]:
        async with gate:
            r = await stub.Cascade(pb.CascadeRequest(query=record["prompt"], **request))
            return r.tier.index, r.total_cost_usd, r.route.tier.index

    return list(await asyncio.gather(*(one(r) for r in records)))


def figures(records: list[dict[str, Any]], served: list[tuple[int, float, int]]) -> dict[str, Any]:
    """Quality (recorded outcome of the answering tier), cost per query, start mix."""
    n = len(records)
    quality = sum(correct_of(r, tier) for r, (tier, _, _) in zip(records, served, strict=True))
    cost = sum(c for _, c, _ in served)
    starts = [0, 0, 0]
    for _, _, start in served:
        starts[min(start, 2)] += 1
    return {
        "quality": round(quality / n, 6),
        "cost_per_query_usd": round(cost / n, 9),
        "start_mix": [round(s / n, 4) for s in starts],
    }


def compare(run: dict[str, Any], top: dict[str, Any], mid: dict[str, Any]) -> dict[str, Any]:
    """Points against always-top and always-mid, and how many times cheaper."""
    return {
        "vs_top_points": round(100 * (run["quality"] - top["quality"]), 2),
        "x_cheaper_than_top": round(top["cost_per_query_usd"] / run["cost_per_query_usd"], 3),
        "vs_mid_points": round(100 * (run["quality"] - mid["quality"]), 2),
        "x_cheaper_than_mid": round(mid["cost_per_query_usd"] / run["cost_per_query_usd"], 3),
    }


async def serve_baselines(
    stub: Any, records: list[dict[str, Any]], settings: Settings, concurrency: int
) -> dict[str, Any]:
    """Always one tier, unjudged: each tier's figures through the same server."""
    baselines = {}
    for index, name in enumerate(("always_cheap", "always_mid", "always_top")):
        tier = settings.tiers[index].name
        served = await serve_all(
            stub, records, concurrency, start_tier=tier, judge_mode=pb.JUDGE_MODE_NEVER
        )
        baselines[name] = figures(records, served)
    return baselines


def adapt_command(db: str, registry: Path, env: dict[str, str], minimum: int) -> dict[str, Any]:
    """`tierroute adapt` on the server's log; its JSON document."""
    argv = [sys.executable, "-m", "tierroute", "adapt", "--db", db, "--registry", str(registry)]
    argv += ["--since", "all", "--min-decisions", str(minimum), "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"tierroute adapt exited {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def environment(args: argparse.Namespace, work: Path, replay: Path, db: str) -> dict[str, str]:
    """The server's and the adapt command's environment: no inherited tierroute settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_MODEL_DIR=args.model_dir,
        TIERROUTE_ROUTING_REGISTRY_DIR=str(work / "registry"),
        TIERROUTE_ROUTING_REGISTRY_POLL_S="0.2",
        TIERROUTE_DB_URL=db,
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(work / "querylog.spool.jsonl"),
        TIERROUTE_QUERYLOG_ENABLED="true",
        TIERROUTE_REPLAY_DATA=str(replay),
        TIERROUTE_REPLAY_TIME_SCALE="0",
        TIERROUTE_ANTHROPIC_BACKEND="replay",
        TIERROUTE_HTTP_PORT="0",
        TIERROUTE_DATA="/nonexistent/tierroute-bench-data",
    )
    return env


async def run(args: argparse.Namespace) -> dict[str, Any]:
    records = load_task(Path(args.data), args.task, args.limit)
    if not records:
        raise SystemExit(f"no {args.task} records in {args.data}")
    work = Path(tempfile.mkdtemp(prefix="tierroute-adapt-bench-"))
    replay = work / "replay.jsonl.gz"
    with gzip.open(replay, "wt", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(_strip(record)) + "\n")
    db = f"sqlite:///{work / 'querylog.sqlite3'}"
    env = environment(args, work, replay, db)
    settings = Settings.from_env(env)
    server = TierRouteServer(settings, environ=env)
    port = await server.start("127.0.0.1", 0)
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.TierRouterStub(channel)
    out: dict[str, Any] = {"task": args.task, "records": len(records), "model_dir": args.model_dir}
    try:
        assert server.router is not None
        out["served_before"] = server.router.model_version
        started = time.monotonic()
        before = await serve_all(stub, records, args.concurrency)
        out["before"] = figures(records, before)
        # The other named points, not logged as traffic: served before the log is read
        # would put them in it, so they are measured after the default's pass.
        # Everything the log was handed is stored before adapt reads it.
        log = server._querylog  # the server's own writer
        if log is not None:
            await log.wait_drained()
        result = await asyncio.to_thread(
            adapt_command, db, work / "registry", env, args.min_decisions
        )
        out["adapt"] = result
        version = result.get("version")
        if version:
            deadline = time.monotonic() + 60
            # The registry watcher swaps the model in on its own; wait for it to.
            while server.router.model_version != version and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        out["served_after"] = server.router.model_version
        after = await serve_all(stub, records, args.concurrency)
        out["after"] = figures(records, after)
        out["after_points"] = {}
        for point in args.points:
            served_at = await serve_all(
                stub, records, args.concurrency, policy=pb.RoutingPolicy(operating_point=point)
            )
            out["after_points"][point] = figures(records, served_at)
        baselines = await serve_baselines(stub, records, settings, args.concurrency)
        out["baselines"] = baselines
        top, mid = baselines["always_top"], baselines["always_mid"]
        out["before_vs"] = compare(out["before"], top, mid)
        out["after_vs"] = compare(out["after"], top, mid)
        for fig in out["after_points"].values():
            fig["vs"] = compare(fig, top, mid)
        out["goals"] = {
            "top_within_0.5_points_at_3x": out["after_vs"]["vs_top_points"] >= -0.5
            and out["after_vs"]["x_cheaper_than_top"] >= 3,
            "mid_quality_at_1.5x_cheaper_than_mid": out["after_vs"]["vs_mid_points"] >= 0
            and out["after_vs"]["x_cheaper_than_mid"] >= 1.5,
        }
        out["seconds"] = round(time.monotonic() - started, 1)
    finally:
        await channel.close()
        await server.stop(0)
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    """Run the experiment; print the figures (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("TIERROUTE_DATA", str(ROOT.parent / "shared/data/dev.jsonl.gz")),
    )
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--model-dir", default=str(ROOT / "model_export" / "bundle"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many records")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-decisions", type=int, default=200, help="adapt's minimum")
    parser.add_argument(
        "--points",
        type=lambda text: [p for p in text.split(",") if p],
        default=["q95", "third_cost"],
        help="other operating points to serve after adapting (comma-separated)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.model_dir = str(Path(args.model_dir).absolute())
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{out['task']}: {out['records']} records, {out['served_before']} -> {out['served_after']}"
    )
    for name in ("always_cheap", "always_mid", "always_top"):
        fig = out["baselines"][name]
        print(f"  {name:<13} quality {fig['quality']:.4f}  cost ${fig['cost_per_query_usd']:.6f}")
    for name in ("before", "after"):
        fig, vs = out[name], out[f"{name}_vs"]
        print(
            f"  {name:<13} quality {fig['quality']:.4f}  cost ${fig['cost_per_query_usd']:.6f}  "
            f"start mix {fig['start_mix']}  vs top {vs['vs_top_points']:+.2f} pts at "
            f"{vs['x_cheaper_than_top']:.2f}x cheaper; vs mid {vs['vs_mid_points']:+.2f} pts "
            f"at {vs['x_cheaper_than_mid']:.2f}x cheaper"
        )
    for point, fig in out["after_points"].items():
        vs = fig["vs"]
        print(
            f"  after@{point:<8} quality {fig['quality']:.4f}  "
            f"cost ${fig['cost_per_query_usd']:.6f}  "
            f"start mix {fig['start_mix']}  vs top {vs['vs_top_points']:+.2f} pts at "
            f"{vs['x_cheaper_than_top']:.2f}x cheaper; vs mid {vs['vs_mid_points']:+.2f} pts "
            f"at {vs['x_cheaper_than_mid']:.2f}x cheaper"
        )
    print(f"  goals (the default point after adapting): {out['goals']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
