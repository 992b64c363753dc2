"""Decision rules and the heuristic's shape rules."""

from __future__ import annotations

import pytest

from tierroute.routing.features import shape_features
from tierroute.routing.policy import Reason, RiskThresholds, calibrated_rule, published_rule, risks
from tierroute.routing.router import heuristic_decision
from tierroute.settings import HeuristicConfig

NAMES = ("cheap", "mid", "expensive")


def test_risk_is_the_mass_above_each_tier() -> None:
    """risk(t) sums the probabilities of the tiers above t."""
    assert risks([0.5, 0.3, 0.2]) == pytest.approx([0.5, 0.2, 0.0])


@pytest.mark.parametrize(
    ("probs", "tier"),
    [((0.8, 0.15, 0.05), 0), ((0.6, 0.3, 0.1), 1), ((0.5, 0.2, 0.3), 2)],
)
def test_calibrated_rule_picks_cheapest_tier_within_risk(
    probs: tuple[float, float, float], tier: int
) -> None:
    """The calibrated rule picks the cheapest tier whose risk is within its threshold."""
    index, _ = calibrated_rule(probs, RiskThresholds((0.3, 0.15)), NAMES)
    assert index == tier


@pytest.mark.parametrize(
    ("probs", "tier"),
    [
        ((0.5, 0.3, 0.2), 2),  # P(top) > 0.15
        ((0.6, 0.31, 0.09), 1),  # P(mid) > 0.30
        ((0.85, 0.09, 0.06), 1),  # P(top) > 0.05
        ((0.9, 0.06, 0.04), 0),
    ],
)
def test_published_rule_verbatim(probs: tuple[float, float, float], tier: int) -> None:
    """The published asymmetric rule matches the recipe's three thresholds."""
    assert published_rule(probs, NAMES)[0] == tier


def test_quality_floor_tightens_every_tier() -> None:
    """A quality floor of q allows at most 1 - q risk on any tier."""
    index, notes = calibrated_rule((0.8, 0.15, 0.05), RiskThresholds((0.3, 0.15)), NAMES, 0.9)
    assert index == 1
    assert notes[0].code is Reason.QUALITY_FLOOR


@pytest.mark.parametrize(
    ("text", "tier", "reason"),
    [
        ("What is the capital of France?", 0, Reason.SIMPLE_QUERY),
        ("word " * 3100, 2, Reason.LONG_INPUT),
        (
            "Analyze the data, then compare the results and finally explain why.",
            2,
            Reason.ANALYTICAL_MULTI_STEP,
        ),
        ("Write a Python function that reverses a list.", 1, Reason.CODING_OR_ANALYTICAL),
    ],
)
def test_heuristic_rules(text: str, tier: int, reason: Reason) -> None:
    """The heuristic applies the published shape rules in order."""
    config = HeuristicConfig()
    index, notes = heuristic_decision(shape_features(text, config), config, 3)
    assert (index, notes[0].code) == (tier, reason)


def test_heuristic_large_code_block_goes_mid() -> None:
    """A fenced code block in a query over 500 tokens goes to the mid tier."""
    text = "Here is my config:\n```\n" + "alpha beta gamma " * 200 + "\n```\nIs it fine?"
    config = HeuristicConfig()
    features = shape_features(text, config)
    assert features.has_code_block
    index, notes = heuristic_decision(features, config, 3)
    assert (index, notes[0].code) == (1, Reason.LARGE_CODE_BLOCK)
