"""The Cascade settings a bundle's calibration ships: its `cascade` section, applied over config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tierroute.cascade.sampling import parse_rates
from tierroute.errors import ConfigError
from tierroute.model.bundle import CASCADE_SECTION
from tierroute.settings import CascadeConfig

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
