"""Own-traffic labels, measured as served: a router trained and calibrated only on 1,500
self-labelled questions, served as-is on fresh questions it was not fitted to.

    .venv/bin/python bench/own_traffic_served.py [--sample 1500] [--methods M1,M2] [--work DIR]

All through the `tierroute` commands (docs/own-traffic.md), at the configured (Claude)
ladder's prices:

1. Dev is split by duplicate group, 20 % held out (`retrain`'s split). The rest plays the
   team's traffic: imported with its question text only, and served by the replay backend
   from a copy with `correct`, `reference_answer` and `min_tier_correct` removed.
2. Per label method: `label --sample N --method M` (the same N questions for every method:
   one seed), `export --labeled`, then what `make model` runs on that file (`train`, then
   `calibrate --prices config`), then `eval --as-served --prices config` on the held-out
   part (ground truth read only there).
3. Beside them: the same recipe on the same N questions with their ground truth
   (`truth_N`, what perfect labels would give) and the shipped bundle (which was trained on
   all of dev, held-out rows included, so it is flattered here).

Reported per router: the default operating point's quality and cost on the held-out part,
and against always-top: quality difference in points, cost ratio and savings
(1 - cost / always-top's). The goal: >= 90 % of the shipped bundle's savings against
always-top at no more than 1 point less quality.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIERROUTE = ROOT / ".venv" / "bin" / "tierroute"
PYTHON = ROOT / ".venv" / "bin" / "python"
TRUTH_FIELDS = ("reference_answer", "min_tier_correct")


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in TRUTH_FIELDS}
    out["models"] = {
        name: {k: v for k, v in m.items() if k != "correct"} for name, m in record["models"].items()
    }
    return out


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


def _run(args: list[str], env: dict[str, str], *, python: bool = False) -> Any:
    started = time.perf_counter()
    command = [str(PYTHON), *args] if python else [str(TIERROUTE), "--log-level", "WARNING", *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 3):
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(args[:2])} failed with exit {proc.returncode}")
    print(f"  {' '.join(args[:1])}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return json.loads(proc.stdout) if "--json" in args else None


def _bundle(data: Path, bundle: Path, env: dict[str, str], workers: int) -> None:
    """What `make model` runs, on `data`."""
    _run(
        ["model_export/build.py", "--data", str(data), "--out", str(bundle), "--no-compare",
         "--quiet"],
        env,
        python=True,
    )  # fmt: skip
    _run(
        ["calibrate", "--data", str(data), "--model-dir", str(bundle), "--prices", "config",
         "--out", str(bundle / "thresholds.json"), "--workers", str(workers), "--quiet"],
        env,
    )  # fmt: skip


def _served(
    held: Path, bundle: Path, out: Path, env: dict[str, str], workers: int
) -> dict[str, Any]:
    _run(
        ["eval", "--as-served", "--data", str(held), "--model-dir", str(bundle), "--prices",
         "config", "--out", str(out), "--workers", str(workers), "--quiet"],
        env,
    )  # fmt: skip
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report


def _row(name: str, report: dict[str, Any], labelling: Any) -> dict[str, Any]:
    strategies = report["strategies"]
    top = strategies["always_expensive"]
    mid = strategies["always_mid"]
    points = {}
    for key, s in strategies.items():
        if not key.startswith("served"):
            continue
        points[key] = {
            "quality": round(s["quality"], 4),
            "cost_per_query_usd": round(s["cost_per_query_usd"], 6),
            "vs_top_points": round(100 * (s["quality"] - top["quality"]), 2),
            "cost_vs_top": round(s["cost_per_query_usd"] / top["cost_per_query_usd"], 3),
            "saving_vs_top": round(1 - s["cost_per_query_usd"] / top["cost_per_query_usd"], 3),
            "start_mix": s.get("start_mix"),
        }
    return {
        "router": name,
        "default_point": report.get("default"),
        "points": points,
        "always_top": {"quality": top["quality"], "cost_per_query_usd": top["cost_per_query_usd"]},
        "always_mid": {"quality": mid["quality"], "cost_per_query_usd": mid["cost_per_query_usd"]},
        "labelling": labelling,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev.jsonl.gz"
    )
    parser.add_argument("--sample", type=int, default=1500)
    parser.add_argument("--methods", default="consensus,majority,judge")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument("--no-truth", dest="truth", action="store_false")
    parser.add_argument("--no-shipped", dest="shipped", action="store_false")
    args = parser.parse_args()

    from tierroute.offline.retrain import split_records
    from tierroute.outcomes import iter_records
    from tierroute.settings import Settings

    work = args.work or Path(tempfile.mkdtemp(prefix="tierroute-served-"))
    work.mkdir(parents=True, exist_ok=True)
    records = list(iter_records(args.data))
    traffic, held = split_records(records, 0.2, 0)
    replay = _write(work / "traffic-no-truth.jsonl.gz", [_strip(r) for r in traffic])
    held_file = _write(work / "held-out.jsonl.gz", held)
    log_file = work / "traffic.jsonl"
    with log_file.open("w", encoding="utf-8") as fh:
        for i, r in enumerate(traffic):
            fh.write(json.dumps({"query": r.get("prompt_sent") or r["prompt"], "timestamp": i}))
            fh.write("\n")
    env = {
        **os.environ,
        "TIERROUTE_REPLAY_DATA": str(replay),
        "TIERROUTE_REPLAY_TIME_SCALE": "0",
        "ANTHROPIC_API_KEY": "",
        "PYTHONPATH": str(ROOT / "service"),
    }
    env.pop("TIERROUTE_DB_URL", None)
    print(f"traffic {len(traffic)}, held out {len(held)}; work in {work}", file=sys.stderr)
    rows = []
    sampled: set[str] = set()
    for method in args.methods.split(","):
        print(f"{method}: {args.sample} labels", file=sys.stderr)
        db = f"sqlite:///{work / f'log-{method}.sqlite3'}"
        _run(["import", "--db", db, str(log_file), "--quiet", "--json"], env)
        labelling = _run(
            ["label", "--db", db, "--sample", str(args.sample), "--method", method, "--quiet",
             "--json"],
            env,
        )  # fmt: skip
        labels = work / f"labels-{method}.jsonl.gz"
        _run(["export", "--db", db, "--labeled", "--out", str(labels), "--json"], env)
        sampled |= {r["prompt"] for r in iter_records(labels)}
        bundle = work / f"bundle-{method}"
        _bundle(labels, bundle, env, args.workers)
        report = _served(held_file, bundle, work / f"eval-{method}", env, args.workers)
        rows.append(_row(f"labels_{method}", report, labelling))
    if args.truth:
        # The same questions with their ground truth: what perfect labels would give.
        truth = _write(
            work / "truth.jsonl.gz",
            [r for r in traffic if (r.get("prompt_sent") or r["prompt"]) in sampled],
        )
        print("truth: the same questions with their ground truth", file=sys.stderr)
        _bundle(truth, work / "bundle-truth", env, args.workers)
        report = _served(held_file, work / "bundle-truth", work / "eval-truth", env, args.workers)
        rows.append(_row("truth", report, None))
    if args.shipped:
        print("shipped bundle", file=sys.stderr)
        shipped = Settings.from_env({}).routing.model_dir
        report = _served(held_file, shipped, work / "eval-shipped", env, args.workers)
        rows.append(_row("shipped", report, None))
    print(json.dumps({"held_out": len(held), "traffic": len(traffic), "routers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
