"""The own-traffic learning curve: quality and cost of a router trained and calibrated only on
`tierroute label`'s judge verdicts, at several label counts, scored on held-out dev data.

    .venv/bin/python bench/own_traffic_curve.py [--sizes 250,500,1000,1500,2000] [--json]

What it does, all through the `tierroute` commands (docs/own-traffic.md):

1. Splits dev by duplicate group: 20 % held out (the same split `tierroute retrain` uses),
   the rest is the "team's traffic". The traffic is imported (`tierroute import`) with its
   ground-truth fields gone: only the question text goes in. The replay backend serves the
   traffic's recorded answers from a copy with `correct`, `reference_answer` and
   `min_tier_correct` removed.
2. The tiers are the recorded trio at their list prices (prices.csv), so costs compare with
   the shipped router's, which was calibrated in those prices.
3. For each size N (ascending): `tierroute label --sample N` (resuming: each size adds to
   the previous sample), `tierroute export --labeled`, `tierroute train` on that file alone
   (its Route thresholds calibrated by cross-validation to the shipped target, average cost
   <= 1/3 of always-top).
4. Scores on the held-out part with the evaluation harness (classifier Route, calibrated
   rule, one call, no judge; ground truth read only there): each candidate, the shipped
   bundle (which saw the held-out rows in training, so it is flattered), the shipped recipe
   retrained on the traffic's ground truth (`refit_truth`, the fair baseline; skip it with
   --no-refit), and always-top.
   Savings = 1 - cost / always-top's cost. The goal at 1,500 labels: >= 90 % of the shipped
   router's savings at no more than 1 point less quality.
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
TRUTH_FIELDS = ("reference_answer", "min_tier_correct")
PRICES = {  # the recorded trio, prices.csv (USD per 1M input, output tokens)
    "cheap": ("gemini-1.5-flash-002", 0.075, 0.3),
    "mid": ("gemini-1.5-pro-002", 1.25, 5.0),
    "expensive": ("gpt-4o-2024-05-13", 5.0, 15.0),
}


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in TRUTH_FIELDS}
    out["models"] = {
        name: {k: v for k, v in m.items() if k != "correct"} for name, m in record["models"].items()
    }
    return out


def _config(path: Path, replay_data: Path) -> None:
    lines = ["[replay]", f'data = "{replay_data}"', "time_scale = 0.0", ""]
    for name, (model, usd_in, usd_out) in PRICES.items():
        lines += [
            "[[tiers]]",
            f'name = "{name}"',
            f'model = "{model}"',
            f"input_usd_per_mtok = {usd_in}",
            f"output_usd_per_mtok = {usd_out}",
            "max_output_tokens = 4096",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(TIERROUTE), "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 3):
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"tierroute {args[0]} failed with exit {proc.returncode}")
    print(
        f"  tierroute {' '.join(args[:1])}: {time.perf_counter() - started:.1f} s", file=sys.stderr
    )
    return json.loads(proc.stdout) if "--json" in args else None


def main() -> int:  # noqa: PLR0915 - one linear experiment
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev.jsonl.gz"
    )
    parser.add_argument("--sizes", default="250,500,1000,1500,2000")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--method",
        choices=("consensus", "majority", "judge"),
        default="consensus",
        help="label --method",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="skip training the shipped recipe on the traffic's ground truth",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from tierroute.offline.retrain import evaluate_bundles, split_records
    from tierroute.outcomes import iter_records
    from tierroute.settings import Settings

    work = args.work or Path(tempfile.mkdtemp(prefix="tierroute-curve-"))
    work.mkdir(parents=True, exist_ok=True)
    records = list(iter_records(args.data))
    traffic, held = split_records(records, 0.2, 0)
    replay_data = work / "traffic-no-truth.jsonl.gz"
    log_file = work / "traffic.jsonl"
    with gzip.open(replay_data, "wt", encoding="utf-8") as fh:
        for r in traffic:
            fh.write(json.dumps(_strip(r)) + "\n")
    with log_file.open("w", encoding="utf-8") as fh:
        for i, r in enumerate(traffic):
            fh.write(
                json.dumps({"query": r.get("prompt_sent") or r["prompt"], "timestamp": i}) + "\n"
            )
    config = work / "trio.toml"
    _config(config, replay_data)
    env = {**os.environ, "TIERROUTE_CONFIG": str(config), "ANTHROPIC_API_KEY": ""}
    env.pop("TIERROUTE_DB_URL", None)
    db = f"sqlite:///{work / 'log.sqlite3'}"
    print(f"traffic {len(traffic)} records, held out {len(held)}; work in {work}", file=sys.stderr)
    _run(["import", "--db", db, str(log_file), "--quiet", "--json"], env)

    bundles: dict[str, Path] = {}
    labelling: dict[int, Any] = {}
    for n in sizes:
        print(f"{n} labels", file=sys.stderr)
        labelling[n] = _run(
            ["label", "--db", db, "--sample", str(n), "--method", args.method, "--quiet",
             "--json"],
            env,
        )  # fmt: skip
        labels = work / f"labels-{n}.jsonl.gz"
        _run(["export", "--db", db, "--labeled", "--out", str(labels), "--json"], env)
        bundle = work / f"bundle-{n}"
        _run(
            ["train", "--data", str(labels), "--out", str(bundle), "--folds", str(args.folds),
             "--no-compare", "--quiet"],
            env,
        )  # fmt: skip
        bundles[f"labels_{n}"] = bundle
    if args.refit:
        # The shipped recipe on the same traffic with its ground truth: the fair baseline,
        # since the shipped bundle saw the held-out rows.
        truth = work / "traffic-with-truth.jsonl.gz"
        with gzip.open(truth, "wt", encoding="utf-8") as fh:
            for r in traffic:
                fh.write(json.dumps(r) + "\n")
        print("refit: the shipped recipe on the traffic's ground truth", file=sys.stderr)
        _run(
            ["train", "--data", str(truth), "--out", str(work / "bundle-refit"), "--folds",
             str(args.folds), "--no-compare", "--quiet"],
            {**os.environ, "ANTHROPIC_API_KEY": ""},
        )  # fmt: skip
        bundles["refit_truth"] = work / "bundle-refit"
    settings = Settings.from_env({})
    bundles["shipped"] = settings.routing.model_dir
    held_ids = {str(r["id"]) for r in held}
    print("scoring on the held-out part", file=sys.stderr)
    figures = evaluate_bundles(settings, args.data, held_ids, bundles)
    top = [r["models"][r["tiers"]["expensive"]] for r in held]
    top_quality = sum(int(m["correct"]) for m in top) / len(top)
    top_cost = sum(float(m["cost_usd"]) for m in top) / len(top)
    shipped = figures["shipped"]
    shipped_saving = 1 - shipped.cost_per_query_usd / top_cost
    rows = []
    for name, fig in figures.items():
        saving = 1 - fig.cost_per_query_usd / top_cost
        n = int(name.split("_")[1]) if name.startswith("labels_") else None
        lab = labelling.get(n) if n else None
        rows.append(
            {
                "router": name,
                "labels": n,
                "quality": round(fig.quality, 4),
                "quality_vs_shipped_points": round(100 * (fig.quality - shipped.quality), 2),
                "cost_per_query_usd": round(fig.cost_per_query_usd, 6),
                "cost_vs_always_top": round(fig.cost_per_query_usd / top_cost, 3),
                "saving_vs_always_top": round(saving, 3),
                "share_of_shipped_saving": round(saving / shipped_saving, 3),
                "tier_mix": {k: round(v, 3) for k, v in fig.tier_mix.items()},
                "labelling_cost_usd": None if lab is None else lab["log_label_spend_usd"],
            }
        )
    goal_row = next((r for r in rows if r["labels"] == 1500), None)
    goal = None
    if goal_row is not None:
        met = (
            goal_row["share_of_shipped_saving"] >= 0.9
            and goal_row["quality_vs_shipped_points"] >= -1.0
        )
        goal = {
            "statement": ">= 90 % of the shipped router's savings at no more than 1 point less "
            "quality, at 1,500 labels",
            "met": met,
        }
    doc = {
        # Each router is its bundle as a server loads it (the ONNX model and thresholds, no
        # refit), answering held-out records by Route; the shipped bundle saw them in training.
        "figures": "as served (Route, one call), on held-out records; shipped: in-sample",
        "held_out_records": len(held),
        "traffic_records": len(traffic),
        "always_top": {"quality": round(top_quality, 4), "cost_per_query_usd": round(top_cost, 6)},
        "routers": rows,
        "goal": goal,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"figures {doc['figures']}")
        print(f"always-top: quality {top_quality:.4f}, ${top_cost:.6f}/query")
        print(f"{'router':12} {'quality':>8} {'vs shipped':>10} {'x top':>6} {'saving':>7} "
              f"{'of shipped':>10} {'label $':>9}")  # fmt: skip
        for r in rows:
            lab = r["labelling_cost_usd"]
            print(
                f"{r['router']:12} {r['quality']:8.4f} {r['quality_vs_shipped_points']:+9.2f}p "
                f"{r['cost_vs_always_top']:6.3f} {r['saving_vs_always_top']:7.3f} "
                f"{r['share_of_shipped_saving']:10.3f} " + ("" if lab is None else f"{lab:9.2f}")
            )
        if goal:
            print(f"goal ({goal['statement']}): {'MET' if goal['met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
