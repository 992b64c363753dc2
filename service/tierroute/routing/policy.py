"""Decision rules that turn per-tier classifier probabilities into a tier.

The classifier predicts, for each tier, the probability that it is the cheapest tier that
answers correctly. The risk of answering on tier t is the probability that a more expensive
tier was needed: `risk(t) = sum(p[t+1:])`. The calibrated rule picks the cheapest tier whose
risk is within that tier's threshold; thresholds come from cross-validated calibration and
ship in the model bundle's `thresholds.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from tierroute.errors import ConfigError, ModelLoadError
from tierroute.routing.plan import CascadePlan


class Reason(Enum):
    """Why a decision came out as it did; mirrors the proto's ReasonCode by name."""

    LONG_INPUT = "LONG_INPUT"
    ANALYTICAL_MULTI_STEP = "ANALYTICAL_MULTI_STEP"
    CODING_OR_ANALYTICAL = "CODING_OR_ANALYTICAL"
    LARGE_CODE_BLOCK = "LARGE_CODE_BLOCK"
    SIMPLE_QUERY = "SIMPLE_QUERY"
    RISK_ABOVE_THRESHOLD = "RISK_ABOVE_THRESHOLD"
    RISK_WITHIN_THRESHOLD = "RISK_WITHIN_THRESHOLD"
    QUALITY_FLOOR = "QUALITY_FLOOR"
    COST_CEILING = "COST_CEILING"
    SESSION_STICKY = "SESSION_STICKY"
    TIER_OVERRIDE = "TIER_OVERRIDE"
    JUDGE_FAILED = "JUDGE_FAILED"
    JUDGE_UNAVAILABLE = "JUDGE_UNAVAILABLE"
    SELF_LOW_CONFIDENCE = "SELF_LOW_CONFIDENCE"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    EXPECTED_VALUE = "EXPECTED_VALUE"
    AGENT_LOOP = "AGENT_LOOP"
    TENANT_BUDGET = "TENANT_BUDGET"
    ANSWERS_DISAGREE = "ANSWERS_DISAGREE"
    UNFAMILIAR_QUERY = "UNFAMILIAR_QUERY"


@dataclass(frozen=True)
class ReasonNote:
    """A reason code with a short detail that never contains query text."""

    code: Reason
    detail: str


# The published recipe's thresholds, verbatim (REFERENCE.md section 1).
PUBLISHED_TOP = 0.15
PUBLISHED_MID = 0.30
PUBLISHED_MID_FROM_TOP = 0.05


@dataclass(frozen=True)
class RiskThresholds:
    """Per-tier risk limits for every tier but the top one, cheapest first."""

    risk: tuple[float, ...]

    @classmethod
    def from_json(cls, data: object, n_tiers: int) -> RiskThresholds:
        """Read the `risk` list of a thresholds file, checking it fits `n_tiers`."""
        if not isinstance(data, dict) or not isinstance(data.get("risk"), list):
            raise ModelLoadError("thresholds must be an object with a 'risk' list")
        risk = tuple(float(v) for v in data["risk"])
        if len(risk) != n_tiers - 1 or not all(0.0 <= v <= 1.0 for v in risk):
            raise ModelLoadError(
                f"thresholds need {n_tiers - 1} risk values in [0, 1], got {list(risk)}"
            )
        return cls(risk)

    def as_dict(self, tier_names: Sequence[str]) -> dict[str, float]:
        """Name each threshold after the tier it guards, for responses and spans."""
        return {f"max_risk_{name}": v for name, v in zip(tier_names, self.risk, strict=False)}


def risks(probs: Sequence[float]) -> list[float]:
    """risk(t) = P(a tier above t was needed), for every tier t."""
    out, above = [0.0] * len(probs), 0.0
    for t in range(len(probs) - 1, -1, -1):
        out[t] = above
        above += probs[t]
    return out


def calibrated_rule(
    probs: Sequence[float],
    thresholds: RiskThresholds,
    tier_names: Sequence[str],
    quality_floor: float = 0.0,
) -> tuple[int, list[ReasonNote]]:
    """Cheapest tier whose risk is within its threshold (and the request's quality floor)."""
    r = risks(probs)
    notes: list[ReasonNote] = []
    top = len(probs) - 1
    for t in range(top):
        limit = thresholds.risk[t]
        floor_limit = 1.0 - quality_floor if quality_floor > 0 else 1.0
        if r[t] <= min(limit, floor_limit):
            notes.append(
                ReasonNote(
                    Reason.RISK_WITHIN_THRESHOLD,
                    f"risk {r[t]:.3f} <= {min(limit, floor_limit):.3f} on {tier_names[t]}",
                )
            )
            return t, notes
        if r[t] <= limit:
            notes.append(
                ReasonNote(
                    Reason.QUALITY_FLOOR,
                    f"risk {r[t]:.3f} on {tier_names[t]} above the floor's {floor_limit:.3f}",
                )
            )
        else:
            notes.append(
                ReasonNote(
                    Reason.RISK_ABOVE_THRESHOLD,
                    f"risk {r[t]:.3f} > {limit:.3f} on {tier_names[t]}",
                )
            )
    return top, notes


def published_rule(
    probs: Sequence[float], tier_names: Sequence[str]
) -> tuple[int, list[ReasonNote]]:
    """The published asymmetric rule verbatim; defined for exactly three tiers."""
    if len(probs) != 3:
        raise ConfigError("the published rule is defined for exactly three tiers")
    p_mid, p_top = probs[1], probs[2]
    if p_top > PUBLISHED_TOP:
        return 2, [
            ReasonNote(Reason.RISK_ABOVE_THRESHOLD, f"P({tier_names[2]}) {p_top:.3f} > 0.15")
        ]
    if p_mid > PUBLISHED_MID or p_top > PUBLISHED_MID_FROM_TOP:
        return 1, [
            ReasonNote(
                Reason.RISK_ABOVE_THRESHOLD,
                f"P({tier_names[1]}) {p_mid:.3f} > 0.30 or P({tier_names[2]}) {p_top:.3f} > 0.05",
            )
        ]
    return 0, [ReasonNote(Reason.RISK_WITHIN_THRESHOLD, "published rule: no upper tier needed")]


PUBLISHED_THRESHOLDS = {
    "published_top": PUBLISHED_TOP,
    "published_mid": PUBLISHED_MID,
    "published_mid_from_top": PUBLISHED_MID_FROM_TOP,
}


@dataclass(frozen=True)
class Scored:
    """What one run of the scorer says of a query: per-tier probabilities, its familiarity
    (0-1; None when the model has no such signal) and, for a Cascade, the value plan."""

    probs: list[float]
    familiarity: float | None = None
    plan: CascadePlan | None = None


# What an unfamiliar query gets (`routing.on_unfamiliar`, ON_UNFAMILIAR_CHOICES,
# docs/operations.md):
# "check": the cheapest tier, its answer checked (agreement with a probe when it states a
#   final answer, else a judge by the tier above), the reference tier on doubt; Route
#   answers the cheapest tier with UNFAMILIAR_QUERY, which tells its caller to check;
# "reference": the reference tier, unjudged (Route: the reference tier);
# "classifier": the classifier decides as for any query; the reason code is still given.


def is_unfamiliar(familiarity: float | None, threshold: float | None) -> bool:
    """Whether a query's familiarity is below the model's threshold (never without both)."""
    return familiarity is not None and threshold is not None and familiarity < threshold
