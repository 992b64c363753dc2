"""Choose the value model's hyperparameters by out-of-fold log loss, as the bundle's were.

    python model_export/value_selection.py --data ../shared/data/dev.jsonl.gz \
        [--model-dir model_export/bundle] [--workers 2] [--json]

Builds the calibration tables once (every record under every fixed setting, through the
cascade engine and the replay backend), then, for each candidate setting, fits the value
model out of fold on the classifier's folds and reports the mean log loss of the six
quality heads and the RMSE of the log-cost heads. The selection criterion is the log
loss, never the goal's figures: picking by those would tune to noise on the data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from tierroute.model.operating import Ladder
from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation import pipeline, valuefit
from tierroute.offline.training.value_fit import MAX_FEATURES, QUALITY_C
from tierroute.outcomes import default_data_path
from tierroute.settings import Settings

# (quality C, vocabulary size): the shipped setting and its neighbours.
CANDIDATES = (
    (0.3, 10_000),
    (3.0, 10_000),
    (1.0, 5_000),
    (1.0, 10_000),
    (1.0, 20_000),
    (1.0, 40_000),
)


def main(argv: list[str] | None = None) -> int:
    """Run the selection and print one row per candidate (or a JSON list)."""
    parser = argparse.ArgumentParser(prog="model_export/value_selection.py")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--model-dir", type=Path, default=Path("model_export/bundle"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    data_path = args.data or default_data_path(os.environ)
    options = pipeline.Options(workers=args.workers, model_dir=args.model_dir)
    data, truth, bundle, settings = pipeline.prepare(
        data_path, Settings.from_env(os.environ), options
    )
    cv = pipeline.cross_validate_for(data, bundle, options)
    tables = cal.build_tables(data, settings, truth, workers=args.workers)
    assert tables.tokens is not None  # build_tables counts tokens
    quality, tokens = valuefit.action_targets(tables.quality, tables.tokens, tables.action_columns)
    # Costs at the evaluated ladder: the token heads are scored by the cost they predict.
    ladder = Ladder.of(settings.tiers)
    cost = ladder.price(tokens)
    texts = valuefit.featurised(data, cv.prefix_chars)
    folds = cv.fold_array(data)
    rows = []
    for c, features in CANDIDATES:
        p, est_tokens = valuefit.out_of_fold(
            texts, quality, tokens, folds, args.workers, quality_c=c, max_features=features
        )
        est = np.maximum(ladder.price(est_tokens), 1e-12)
        p = np.clip(p, 1e-12, 1 - 1e-12)
        log_loss = float(-np.mean(quality * np.log(p) + (1 - quality) * np.log(1 - p)))
        rmse = float(np.sqrt(np.mean((np.log(est) - np.log(np.maximum(cost, 1e-12))) ** 2)))
        rows.append(
            {
                "quality_c": c,
                "max_features": features,
                "log_loss": round(log_loss, 5),
                "log_cost_rmse": round(rmse, 4),
                "shipped": (c, features) == (QUALITY_C, MAX_FEATURES),
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            mark = "  <- shipped" if row["shipped"] else ""
            print(
                f"C={row['quality_c']:<4} features={row['max_features']:>6}  log loss "
                f"{row['log_loss']:.5f}  log-cost RMSE {row['log_cost_rmse']:.4f}{mark}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
