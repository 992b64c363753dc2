"""The calibrated thresholds file: its `cascade` section, read and applied to settings.

`thresholds.json` in a model bundle holds the classifier's `risk` limits (read by
`tierroute.policy.RiskThresholds.from_json`) and, once `tierroute calibrate` has written
it, a `cascade` section with the judge sampling rates and the speculative bound it chose.
Its keys are `CascadeConfig` field names, so applying it is a `dataclasses.replace`. This
module imports nothing heavy: the server can use it to read the same file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierroute.classifier import METADATA_FILE, THRESHOLDS_FILE
from tierroute.errors import ConfigError
from tierroute.sampling import parse_rates
from tierroute.settings import CascadeConfig

CASCADE_SECTION = "cascade"
# The CascadeConfig fields a thresholds file may set.
CASCADE_KEYS = ("judge_sample_rate", "judge_sample_rates", "speculative_bound")


def cascade_overrides(document: Mapping[str, Any]) -> dict[str, Any]:
    """The validated `cascade` section of a thresholds document ({} when it has none)."""
    section = document.get(CASCADE_SECTION)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError("thresholds 'cascade' must be an object")
    out: dict[str, Any] = {}
    for key in CASCADE_KEYS:
        if key not in section:
            continue
        value = section[key]
        if key == "judge_sample_rates":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError("cascade.judge_sample_rates must be a list of 'type=rate'")
            parse_rates(value)
            out[key] = tuple(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"cascade.{key} must be a number")
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"cascade.{key} must be within [0, 1], not {value}")
            out[key] = float(value)
    return out


def apply_cascade(config: CascadeConfig, document: Mapping[str, Any]) -> CascadeConfig:
    """`config` with the thresholds document's cascade settings applied over it."""
    return dataclasses.replace(config, **cascade_overrides(document))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; ConfigError naming the file when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return document


@dataclass(frozen=True)
class Bundle:
    """What the evaluation needs of a model bundle: its version, training settings, thresholds."""

    path: Path
    version: str
    metadata: Mapping[str, Any]
    thresholds: Mapping[str, Any]

    @property
    def prefix_chars(self) -> int:
        """Characters of each prompt the classifier reads."""
        return int(self.metadata.get("prefix_chars", 4096))

    @property
    def none_label(self) -> str:
        """How training labelled records no tier got right."""
        policy = self.metadata.get("none_label")
        return str(policy.get("policy", "cheap")) if isinstance(policy, Mapping) else "cheap"

    @property
    def risk(self) -> tuple[float, ...]:
        """The shipped risk thresholds."""
        risk = self.thresholds.get("risk")
        if not isinstance(risk, list):
            raise ConfigError(f"{self.path / THRESHOLDS_FILE}: no 'risk' list")
        return tuple(float(v) for v in risk)

    @property
    def cascade_risk(self) -> tuple[float, ...]:
        """Where Cascade starts: `cascade.risk` once calibrated, else the Route thresholds."""
        section = self.thresholds.get(CASCADE_SECTION)
        risk = section.get("risk") if isinstance(section, Mapping) else None
        if risk is None:
            return self.risk
        if not isinstance(risk, list):
            raise ConfigError(f"{self.path / THRESHOLDS_FILE}: 'cascade.risk' is not a list")
        return tuple(float(v) for v in risk)

    @property
    def cascade_policy(self) -> str:
        """`value` when calibration shipped the value policy, else `thresholds`."""
        section = self.thresholds.get(CASCADE_SECTION)
        policy = section.get("policy") if isinstance(section, Mapping) else None
        return str(policy) if policy else "thresholds"

    @property
    def price_per_correct_usd(self) -> float | None:
        """The value policy's price of a correct answer, when it ships."""
        if self.cascade_policy != "value":
            return None
        section = self.thresholds[CASCADE_SECTION]
        value = section.get("value") if isinstance(section, Mapping) else None
        price = value.get("price_per_correct_usd") if isinstance(value, Mapping) else None
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ConfigError(
                f"{self.path / THRESHOLDS_FILE}: cascade.value.price_per_correct_usd is missing"
            )
        return float(price)

    @classmethod
    def read(cls, model_dir: Path) -> Bundle:
        """Read the metadata and thresholds of the bundle in `model_dir` (no ONNX loading)."""
        metadata = read_json(model_dir / METADATA_FILE)
        thresholds = read_json(model_dir / THRESHOLDS_FILE)
        version = metadata.get("model_version")
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{model_dir / METADATA_FILE}: no model_version")
        return cls(model_dir, version, metadata, thresholds)
