"""Cost of drift coverage (`Vocabulary.coverage`) per call, against the routing model's predict.

Both run in-process on the first `--prompts` prompts of the data file (default
../shared/data/dev.jsonl.gz), with the bundled model and its vocabulary; each prompt is timed
`--repeat` times and the figures are medians and p99s over all timings. The baseline is the
ONNX `predict_proba` of the same prompts, measured in the same run.

    .venv/bin/python bench/coverage_bench.py [--prompts 300] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _time_each(fn: Callable[[str], Any], prompts: list[str], repeat: int) -> tuple[float, float]:
    """Median and p99 in microseconds over every prompt, `repeat` times, after a warm pass."""
    for prompt in prompts:
        fn(prompt)
    samples = []
    for _ in range(repeat):
        for prompt in prompts:
            start = time.perf_counter_ns()
            fn(prompt)
            samples.append(time.perf_counter_ns() - start)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) / 1000, p99 / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300, help="prompts from the data file")
    parser.add_argument("--repeat", type=int, default=5, help="timings per prompt")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tierroute.model.classifier import RouterModel
    from tierroute.model.vocabulary import Vocabulary
    from tierroute.outcomes import default_data_path, iter_records
    from tierroute.settings import Settings

    settings = Settings.from_env(os.environ)
    bundle = settings.routing.model_dir
    model = RouterModel.load(bundle, len(settings.tiers))
    vocabulary = Vocabulary.from_bundle(bundle, model.prefix_chars)
    data = default_data_path(os.environ)
    prompts = [r["prompt"] for r in itertools.islice(iter_records(data), args.prompts)]

    cov_p50, cov_p99 = _time_each(vocabulary.coverage, prompts, args.repeat)
    pred_p50, pred_p99 = _time_each(model.predict_proba, prompts, args.repeat)
    result = {
        "coverage_p50_us": round(cov_p50, 1),
        "coverage_p99_us": round(cov_p99, 1),
        "predict_p50_us": round(pred_p50, 1),
        "predict_p99_us": round(pred_p99, 1),
        "coverage_p50_over_predict_p50": round(cov_p50 / pred_p50, 3),
        "prompts": len(prompts),
        "repeat": args.repeat,
        "data": str(data),
        "vocabulary_words": len(vocabulary.words),
        "model_version": model.version,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
