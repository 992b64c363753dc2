"""What the Cascade's value policy adds to routing, against the classifier in the same run.

A Cascade request routed by the value policy runs two ONNX models: the router classifier
(its probabilities are the decision's scores and confidence) and the value model (the
plan). Both run inline on the event loop. This times each in process, over the same
sequential queries, as median and p99, and reports the value model's cost as a ratio of
the classifier's.

    .venv/bin/python bench/value_bench.py [--calls 3000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from tierroute.classifier import RouterModel
from tierroute.settings import Settings

QUERIES = [
    "What is the capital of France?",
    "Question: A 0.5 kg ball is thrown upward at 12 m/s. How high does it rise?\nOptions: "
    "A. 7.3 m B. 3.1 m C. 14 m D. 9.8 m\nAnswer: Let's think step by step.",
    "You are given a Python function and an assertion containing an input to the function. "
    "Complete the assertion with the literal output.\n"
    "def f(x):\n    return sorted(x)[::-1]\nassert f([3, 1, 2]) == ??",
    "Find the number of ordered pairs (a, b) of integers with a^2 + b^2 = 2025 and a < b.",
]


def _time_calls(fn: Any, calls: int, warm: int = 200) -> tuple[float, float]:
    for i in range(warm):
        fn(i)
    samples = []
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - start)
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return statistics.median(ordered) / 1000, p99


def main() -> int:
    """Time both models; print the figures (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    model = RouterModel.load(settings.routing.model_dir, len(settings.tiers))
    if model.value_model is None:
        print("the bundle has no value model (cascade.policy is not 'value')", file=sys.stderr)
        return 2
    model.warm_up()
    cls_p50, cls_p99 = _time_calls(lambda i: model.predict_proba(QUERIES[i % 4]), args.calls)
    val_p50, val_p99 = _time_calls(lambda i: model.cascade_plan(QUERIES[i % 4]), args.calls)
    result = {
        "classifier_p50_us": round(cls_p50, 1),
        "classifier_p99_us": round(cls_p99, 1),
        "value_plan_p50_us": round(val_p50, 1),
        "value_plan_p99_us": round(val_p99, 1),
        "calls": args.calls,
        "model_version": model.version,
        "ratios": {"value_plan_p50_over_classifier_p50": round(val_p50 / cls_p50, 2)},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
