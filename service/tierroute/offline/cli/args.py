"""Command-line arguments the offline commands share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tierroute.outcomes import DATA_ENV

if TYPE_CHECKING:
    import argparse


DEFAULT_FOLDS = 5


def add_data_argument(
    parser: argparse.ArgumentParser,
    *,
    required: bool = False,
    what: str = "recorded-outcome file (.jsonl or .jsonl.gz)",
) -> None:
    """Add `--data PATH`; left None when absent, for `default_data_path` to resolve later."""
    default = "" if required else f" (default ${DATA_ENV} or ../shared/data/dev.jsonl.gz)"
    parser.add_argument(
        "--data", type=Path, default=None, required=required, help=f"{what}{default}"
    )


def add_folds_argument(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Add `--folds N` (default 5), the cross-validation folds over the data."""
    parser.add_argument(
        "--folds", type=int, default=DEFAULT_FOLDS, help=f"{what} (default %(default)s)"
    )
