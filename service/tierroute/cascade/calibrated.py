"""The Cascade settings a bundle's calibration ships: its `cascade` section, applied over
config, and the judge sampling and speculative bound that follow for each loaded model."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierroute.cascade.sampling import JudgeSampler, parse_rates
from tierroute.errors import ConfigError
from tierroute.model.bundle import CASCADE_SECTION
from tierroute.settings import CascadeConfig

logger = logging.getLogger(__name__)

# The CascadeConfig fields a thresholds file may set.
CASCADE_KEYS = ("judge_sample_rate", "judge_sample_rates", "speculative_bound")
# Reloads are rare; the current and previous models are what calls ask for.
_PER_MODEL_CACHE = 4


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


@dataclass(frozen=True)
class ModelCascade:
    """The cascade settings a model's calibration decides: judge sampling, speculation."""

    sampler: JudgeSampler
    speculative_bound: float


class ModelCascades:
    """Judge sampling and the speculative bound per loaded model, built once per model.

    The configured `cascade` settings, with the model bundle's calibrated `cascade` section
    applied over them unless `cascade.use_model_calibration = false`, so a bundle's
    calibration applies to the calls that model routes, hot reloads included. A section
    that does not validate is logged and ignored (the configured values serve), never an
    error on the request path.
    """

    def __init__(self, config: CascadeConfig) -> None:
        self._config = config
        # Keyed by the calibration document itself (held here, so compared by identity): a
        # bundle recalibrated in place and reloaded under the same version is a new document.
        self._known: list[tuple[object, ModelCascade]] = []

    def of(self, scorer: object | None) -> ModelCascade:
        """The settings for the model `scorer` serves (None: no model, the configured ones)."""
        document = getattr(scorer, "calibration", None) if scorer is not None else None
        if not self._config.use_model_calibration or not isinstance(document, Mapping):
            document = None
        for known, cached in self._known:
            if known is document:
                return cached
        found = self._build(document, str(getattr(scorer, "version", "")))
        self._known = [*self._known[-(_PER_MODEL_CACHE - 1) :], (document, found)]
        return found

    def _build(self, document: Mapping[str, Any] | None, version: str) -> ModelCascade:
        config = self._config
        if document is not None:
            try:
                config = apply_cascade(self._config, document)
            except ConfigError as exc:
                logger.warning("model %s: cascade calibration ignored: %s", version, exc)
            else:
                if config != self._config:
                    logger.info(
                        "model %s: cascade settings from its calibration: %s",
                        version,
                        cascade_overrides(document),
                    )
        return ModelCascade(
            JudgeSampler(config.judge_sample_rate, parse_rates(config.judge_sample_rates)),
            config.speculative_bound,
        )
