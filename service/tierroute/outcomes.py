"""Reading recorded-outcome files of the `../shared/data` schema (JSON lines, gzip or not).

Routing and serving code must never read `correct` or `reference_answer`: only training
labels and the evaluation's scoring step do, and they say so where they do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError

TIER_KEYS = ("cheap", "mid", "expensive")
DATA_ENV = "TIERROUTE_DATA"


def default_data_path(environ: Mapping[str, str]) -> Path:
    """`$TIERROUTE_DATA`, else `../shared/data/dev.jsonl.gz` beside the checkout."""
    if environ.get(DATA_ENV):
        return Path(environ[DATA_ENV])
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "dev.jsonl.gz"


def _open(path: Path) -> Any:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each record of a recorded-outcome file; ConfigError names a bad file or line."""
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict) or "prompt" not in record or "models" not in record:
                raise ConfigError(f"{path}:{lineno}: a record needs 'prompt' and 'models'")
            yield record


def load_records(path: Path) -> list[dict[str, Any]]:
    """All records of a file, in order."""
    return list(iter_records(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, as the model metadata and reports record it."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tier_model(record: Mapping[str, Any], tier_key: str) -> dict[str, Any]:
    """The recorded outcome of the record's default-trio model for `tier_key`."""
    model_key = record["tiers"][tier_key]
    outcome: dict[str, Any] = record["models"][model_key]
    return outcome


def trio_key(tier_index: int, n_tiers: int) -> str:
    """The trio key ("cheap", "mid" or "expensive") playing a configured tier position."""
    if tier_index <= 0:
        return TIER_KEYS[0]
    if tier_index >= n_tiers - 1:
        return TIER_KEYS[-1]
    return TIER_KEYS[1]
