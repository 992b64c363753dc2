"""`make model`: train the shipped router model on the dev data and write model_export/bundle.

    python model_export/build.py --data ../shared/data/dev.jsonl.gz --out model_export/bundle

Takes the same options as `tierroute train` (see `--help`); the defaults are the shipped
ones. The bundle it writes is byte-for-byte reproducible from the data file and the code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tierroute.offline.cli.modelling import add_train_arguments, run_train
from tierroute.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Parse the options, train, and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="model_export/build.py",
        description="Train, calibrate, export and verify the shipped router model bundle.",
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # An entry point like `tierroute train`: settings are built here, from the environment.
    return run_train(args, Settings.from_env(os.environ), os.environ)


if __name__ == "__main__":
    sys.exit(main())
