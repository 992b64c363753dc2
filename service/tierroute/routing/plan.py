"""The value policy's decisions: the Cascade actions, and the plan chosen for one query.

A plan is what the value model's per-action estimates choose: the action with the lowest
expected cost minus the price of a correct answer times its probability."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

JudgePlan = Literal["none", "all", "start_only", "agree", "agree_mid"]


# "agree" and "agree_mid" check by agreement with a probe instead of a judge (the Cascade's
# agreement modes, docs/cascade.md): they start on the cheapest tier.
JUDGE_PLANS: tuple[JudgePlan, ...] = ("none", "all", "start_only", "agree", "agree_mid")


@dataclass(frozen=True)
class CascadeAction:
    """Start on tier `start`; judge no answer, every answer below the top, or only the first."""

    start: int
    judge: JudgePlan

    def name(self, tier_names: Sequence[str]) -> str:
        """Readable name, e.g. `cheap+judge` or `cheap+judge_start_only`."""
        tier = tier_names[self.start] if self.start < len(tier_names) else str(self.start)
        if self.judge == "none":
            return tier
        if self.judge in ("agree", "agree_mid"):
            return f"{tier}+{self.judge}"
        return f"{tier}+judge" if self.judge == "all" else f"{tier}+judge_start_only"

    def as_dict(self) -> dict[str, Any]:
        """As stored in the thresholds file."""
        return {"start": self.start, "judge": self.judge}


# The actions for three tiers, cheapest first. The top tier's answers are never judged, so
# "start_only" differs from "all" only when an escalation lands below the top (cheap start).
ACTIONS: tuple[CascadeAction, ...] = (
    CascadeAction(0, "none"),
    CascadeAction(0, "all"),
    CascadeAction(0, "start_only"),
    CascadeAction(1, "none"),
    CascadeAction(1, "all"),
    CascadeAction(2, "none"),
)

# The agreement actions (a probe cross-checks the cheap answer; `agree`: on a disagreement
# the mid tier answers and ships when it agrees with either, else the top tier; `agree_mid`:
# on a disagreement the mid answer ships). A bundle whose value section lists them may
# choose them; ACTIONS, what `make model` fits today, does not include them.
AGREEMENT_ACTIONS: tuple[CascadeAction, ...] = (
    CascadeAction(0, "agree"),
    CascadeAction(0, "agree_mid"),
)


@dataclass(frozen=True)
class CascadePlan:
    """The action the value policy chose, and what it expected of every action."""

    index: int
    action: CascadeAction
    p_correct: tuple[float, ...]
    cost_usd: tuple[float, ...]
    price_per_correct_usd: float
    # The operating point whose price of a correct answer chose it ("" when none is named).
    operating_point: str = ""

    @property
    def start(self) -> int:
        """The tier index the Cascade starts on."""
        return self.action.start

    @property
    def judge(self) -> JudgePlan:
        """Which answers the Cascade judges."""
        return self.action.judge


def choose(
    p_correct: Sequence[float], cost_usd: Sequence[float], price_per_correct_usd: float
) -> int:
    """The action index with the lowest `cost - price * P(correct)`; ties go to the cheaper.

    ACTIONS are ordered cheapest first, so on a tie the earlier index wins.
    """
    best, best_value = 0, math.inf
    for index, (p, c) in enumerate(zip(p_correct, cost_usd, strict=True)):
        value = c - price_per_correct_usd * p
        if value < best_value:
            best, best_value = index, value
    return best


def plan_from(
    p_correct: Sequence[float],
    cost_usd: Sequence[float],
    price_per_correct_usd: float,
    actions: Sequence[CascadeAction] = ACTIONS,
    operating_point: str = "",
) -> CascadePlan:
    """The plan for one query from its per-action estimates."""
    index = choose(p_correct, cost_usd, price_per_correct_usd)
    return CascadePlan(
        index,
        actions[index],
        tuple(map(float, p_correct)),
        tuple(map(float, cost_usd)),
        price_per_correct_usd,
        operating_point,
    )
