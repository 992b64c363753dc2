"""The model bundle's format in one place: its file names, metadata and thresholds.

A bundle is a directory with `model.onnx` (the router classifier), `metadata.json`
(version, label order, hashes, training figures), `thresholds.json` (the calibrated risk
limits and the Cascade's settings) and, when the Cascade's value policy ships, `value.onnx`.
Reading it needs no onnxruntime: the evaluation and the registry read bundles they do not
serve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
THRESHOLDS_FILE = "thresholds.json"
# The Cascade's value model, present when thresholds.json ships the value policy.
VALUE_FILE = "value.onnx"
# What the value policy's operating points were solved from (out-of-fold estimates and
# realised outcomes per calibration record), so they can be solved again for other prices.
VALUE_CALIBRATION_FILE = "value_calibration.npz"
# Every bundle has these; a registry copies the optional ones along when present.
BUNDLE_FILES = (MODEL_FILE, THRESHOLDS_FILE, METADATA_FILE)
OPTIONAL_FILES = (VALUE_FILE, VALUE_CALIBRATION_FILE)

# thresholds.json: the Cascade's section, and the policies it may name (`cascade.policy`;
# absent means "thresholds").
CASCADE_SECTION = "cascade"
POLICY_THRESHOLDS = "thresholds"
POLICY_VALUE = "value"
CASCADE_POLICIES = (POLICY_THRESHOLDS, POLICY_VALUE)


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
