"""The value policy's decisions: the Cascade actions, and the plan chosen for one query.

A plan is what the value model's per-action estimates choose: the action with the lowest
expected cost minus the price of a correct answer times its probability."""

from __future__ import annotations

import math
import re
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
# on a disagreement the mid answer ships). They apply only to prompts that ask for a
# comparable final answer (`agreement_applies`).
AGREEMENT_ACTIONS: tuple[CascadeAction, ...] = (
    CascadeAction(0, "agree"),
    CascadeAction(0, "agree_mid"),
)
# What `tierroute calibrate` fits when a probe is configured: the judge and start-tier
# actions, then the agreement checks (a bundle lists its own actions; this is the default).
VALUE_ACTIONS: tuple[CascadeAction, ...] = (*ACTIONS, *AGREEMENT_ACTIONS)

# The prompt's shape says whether its answers will state a final answer that
# `providers.answers.final_answer` can compare: lettered options, an answer-format
# instruction, a code-output assertion, or a short quantitative question. Open-ended
# requests (write, explain, implement, code fences, long briefs) have none.
_CHOICES = re.compile(r"(?m)^\s*\(?[A-J][.)]\s+\S")
_FORMAT = re.compile(r"answer is|\banswer:|\\boxed|[\"`]answer[\"`]|final answer", re.IGNORECASE)
_ASSERTION = re.compile(r"assert\s.*==\s*\?\?")
_OPEN_ENDED = re.compile(
    r"^\W*(?:please\s+)?(?:write|implement|create|explain|describe|design|generate|draft|"
    r"compose|build|make|fix|refactor|translate|summari[sz]e|rewrite|list|give|show|help|"
    r"tell|suggest|develop|code|convert|improve|act|imagine|provide|plan|outline|"
    r"can you|could you|would you|i need|i want|i have|i am|i'm|"
    r"how (?:do|can|would|should) i)\b",
    re.IGNORECASE,
)
_QUANTITATIVE = re.compile(r"\d|\\frac|\\sqrt|\$")
_ASKS = re.compile(
    r"\?\s*$|^\W*(?:find|compute|calculate|evaluate|solve|simplify|determine|what|"
    r"how many|how much|if|let|suppose|given)\b",
    re.IGNORECASE,
)
# A longer prompt without options or a format is a brief, not a question with one answer.
_OPEN_ENDED_CHARS = 2000
# The patterns read this much of a prompt, so a huge one costs no more than this.
_SCAN_CHARS = 8192


def agreement_applies(text: str) -> bool:
    """Whether answers to `text` will state a comparable final answer, by the prompt's
    shape: only then can a probe's answer agree with a tier's (docs/cascade.md)."""
    head = text[:_SCAN_CHARS]
    if len(_CHOICES.findall(head)) >= 2 or _FORMAT.search(head) or _ASSERTION.search(head):
        return True
    if "```" in head or len(text) > _OPEN_ENDED_CHARS or _OPEN_ENDED.search(head):
        return False
    stripped = head.strip()
    return bool(_QUANTITATIVE.search(stripped) and _ASKS.search(stripped))


def allowed_actions(actions: Sequence[CascadeAction], text: str) -> tuple[bool, ...] | None:
    """Which of `actions` may be chosen for `text` (None: all): the agreement checks only
    where `agreement_applies`."""
    if not any(a.judge in ("agree", "agree_mid") for a in actions) or agreement_applies(text):
        return None
    return tuple(a.judge not in ("agree", "agree_mid") for a in actions)


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
    # Which actions it could choose for this query (None: all); the query log keeps it.
    allowed: tuple[bool, ...] | None = None

    @property
    def start(self) -> int:
        """The tier index the Cascade starts on."""
        return self.action.start

    @property
    def judge(self) -> JudgePlan:
        """Which answers the Cascade judges."""
        return self.action.judge


def choose(
    p_correct: Sequence[float],
    cost_usd: Sequence[float],
    price_per_correct_usd: float,
    allowed: Sequence[bool] | None = None,
) -> int:
    """The action index with the lowest `cost - price * P(correct)` among the `allowed`
    ones (None: all); ties go to the cheaper.

    ACTIONS are ordered cheapest first, so on a tie the earlier index wins.
    """
    best, best_value = 0, math.inf
    for index, (p, c) in enumerate(zip(p_correct, cost_usd, strict=True)):
        if allowed is not None and not allowed[index]:
            continue
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
    *,
    allowed: Sequence[bool] | None = None,
) -> CascadePlan:
    """The plan for one query from its per-action estimates (`allowed`: see `choose`)."""
    index = choose(p_correct, cost_usd, price_per_correct_usd, allowed)
    return CascadePlan(
        index,
        actions[index],
        tuple(map(float, p_correct)),
        tuple(map(float, cost_usd)),
        price_per_correct_usd,
        operating_point,
        None if allowed is None else tuple(map(bool, allowed)),
    )
