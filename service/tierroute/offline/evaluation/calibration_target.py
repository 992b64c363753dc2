"""A calibration target: a cost budget or a quality floor, absolute or relative to
always-top on the same rows (`tierroute calibrate --max-cost-per-query / --min-quality`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tierroute.errors import ConfigError

TargetKind = Literal["max_cost_per_query", "min_quality"]
DIGITS = 6


@dataclass(frozen=True)
class CalibrationTarget:
    """A cost budget or a quality floor, absolute or relative to always-top on the same rows."""

    kind: TargetKind
    value: float
    relative: bool

    def __post_init__(self) -> None:
        if self.kind not in ("max_cost_per_query", "min_quality"):
            raise ConfigError(f"unknown calibration target {self.kind!r}")
        if not self.value > 0 or (
            self.kind == "min_quality" and not self.relative and self.value > 1
        ):
            raise ConfigError(f"target {self.kind} {self.value} is out of range")

    @classmethod
    def parse(cls, kind: TargetKind, text: str) -> CalibrationTarget:
        """`0.0037` (USD or 0-1 quality) or `0.3333x` (times always-top-tier's figure)."""
        relative = text.strip().lower().endswith("x")
        try:
            value = float(text.strip().rstrip("xX"))
        except ValueError as exc:
            raise ConfigError(
                f"target {text!r} is not a number (or a number followed by x)"
            ) from exc
        return cls(kind, value, relative)

    def limit(self, top_quality: float, top_cost: float) -> float:
        """The absolute limit on rows where always-top scores `top_quality` at `top_cost`."""
        if not self.relative:
            return self.value
        return self.value * (top_cost if self.kind == "max_cost_per_query" else top_quality)

    def statement(self) -> str:
        """The target in one sentence."""
        scale = " x always-top-tier's" if self.relative else ""
        if self.kind == "max_cost_per_query":
            unit = "" if self.relative else " USD"
            return (
                f"maximise quality subject to cost per query <= {self.value:.6g}{unit}{scale}"
                + (" cost" if self.relative else "")
            )
        return f"minimise cost per query subject to quality >= {self.value:.6g}{scale}" + (
            " quality" if self.relative else ""
        )

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        return {
            "kind": self.kind,
            "value": round(self.value, DIGITS),
            "relative_to": "always_top_tier" if self.relative else "absolute",
            "statement": self.statement(),
        }


__all__ = ["DIGITS", "CalibrationTarget", "TargetKind"]
