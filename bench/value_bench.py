"""What the Cascade's value policy adds to routing, against the classifier in the same run.

A Cascade request routed by the value policy runs two ONNX models: the router classifier
(its probabilities are the decision's scores and confidence) and the value model (the
plan). Both run inline on the event loop. This times each in process, over the same
sequential queries, as median and p99, and reports the value model's cost as a ratio of
the classifier's.

    .venv/bin/python bench/value_bench.py [--calls 3000] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from tierroute.model.bundle import VALUE_FILE
from tierroute.model.classifier import RouterModel
from tierroute.routing.features import classifier_text
from tierroute.settings import Settings
from timing import print_result, time_calls

QUERIES = [
    "What is the capital of France?",
    "Question: A 0.5 kg ball is thrown upward at 12 m/s. How high does it rise?\nOptions: "
    "A. 7.3 m B. 3.1 m C. 14 m D. 9.8 m\nAnswer: Let's think step by step.",
    "You are given a Python function and an assertion containing an input to the function. "
    "Complete the assertion with the literal output.\n"
    "def f(x):\n    return sorted(x)[::-1]\nassert f([3, 1, 2]) == ??",
    "Find the number of ordered pairs (a, b) of integers with a^2 + b^2 = 2025 and a < b.",
]


def profile(model_dir: Path, runs: int, prefix_chars: int) -> dict[str, float]:
    """Mean microseconds per run of each node of value.onnx, from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="tierroute-prof-")) / "value")
    session = ort.InferenceSession(
        (model_dir / VALUE_FILE).read_bytes(), options, providers=["CPUExecutionProvider"]
    )
    feeds = [
        {"text": np.array([[classifier_text(q, prefix_chars)]], dtype=object)} for q in QUERIES
    ]
    for i in range(runs):
        session.run(None, feeds[i % len(feeds)])
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = f"{event['args']['op_name']} ({event['name'].removesuffix('_kernel_time')})"
            total[key] += event["dur"]
            count[key] += 1
    means = {key: total[key] / count[key] for key in total}
    return dict(sorted(((k, round(v, 1)) for k, v in means.items()), key=lambda kv: -kv[1]))


def main() -> int:
    """Time both models; print the figures (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="also: mean microseconds per value.onnx node"
    )
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    model = RouterModel.load(settings.routing.model_dir, len(settings.tiers))
    if model.value_model is None:
        print("the bundle has no value model (cascade.policy is not 'value')", file=sys.stderr)
        return 2
    model.warm_up()
    cls_p50, cls_p99 = time_calls(lambda i: model.predict_proba(QUERIES[i % 4]), args.calls)
    val_p50, val_p99 = time_calls(lambda i: model.cascade_plan(QUERIES[i % 4]), args.calls)
    result = {
        "classifier_p50_us": round(cls_p50, 1),
        "classifier_p99_us": round(cls_p99, 1),
        "value_plan_p50_us": round(val_p50, 1),
        "value_plan_p99_us": round(val_p99, 1),
        "calls": args.calls,
        "model_version": model.version,
        "ratios": {"value_plan_p50_over_classifier_p50": round(val_p50 / cls_p50, 2)},
    }
    if args.profile:
        result["value_onnx_node_us"] = profile(
            settings.routing.model_dir, args.calls, model.value_model.prefix_chars
        )
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
