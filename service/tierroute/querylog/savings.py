"""The savings report: what the labelled sample (`tier_labels`) says routing saves against
the reference tier (`routing.reference_tier`, else the top tier), and at what quality.

For each logged call whose every tier is labelled, the routed tier is what the policy chose
for it: the shadow decision (`shadow.tier`) when the call holds one, else the tier it was
served on (Cascade: the final tier; Route: the chosen tier). Both sides are the labelled
answers, each answered alone with the same output cap, so they compare like with like:

- savings = 1 - sum of the routed tiers' answer costs / sum of the reference tier's;
- per question, the routed answer against the reference's verdicts: a win (routed passes,
  reference fails), a tie (the same verdict, or the routed tier is the reference) or a loss
  (routed fails, reference passes). An unavailable verdict counts as a fail, as `export`
  counts it. Each rate has a 95 % Wilson interval; the net (win - loss) rate, the quality
  difference in points, a 95 % normal interval of the paired difference.

Calls without a full set of labels are left out: the sample is what was labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierroute.querylog.labels import TierLabel
from tierroute.querylog.records import SHADOW_TIER, QueryRecord

Z_95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (0, 1 for no observations)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """A count over the sample, its share and 95 % interval."""

    count: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, count: int, n: int) -> Rate:
        """The rate of `count` in `n` with its Wilson interval."""
        low, high = wilson(count, n)
        return cls(count, count / n if n else 0.0, low, high)


@dataclass(frozen=True)
class Savings:
    """What the labelled sample says about routing against the reference tier."""

    reference_tier: str
    questions: int
    routed_cost_usd: float
    reference_cost_usd: float
    win: Rate
    tie: Rate
    loss: Rate
    net_points: float
    net_low_points: float
    net_high_points: float
    routed_by_tier: dict[str, int]

    @property
    def savings(self) -> float | None:
        """1 - routed cost / reference cost (None without a reference cost)."""
        if self.reference_cost_usd <= 0:
            return None
        return 1 - self.routed_cost_usd / self.reference_cost_usd

    def to_json(self) -> dict[str, Any]:
        """The JSON form `tierroute report --json` prints under `savings`."""
        return {
            "reference_tier": self.reference_tier,
            "labelled_questions": self.questions,
            "routed_cost_usd": self.routed_cost_usd,
            "reference_cost_usd": self.reference_cost_usd,
            "savings": self.savings,
            "win": vars(self.win),
            "tie": vars(self.tie),
            "loss": vars(self.loss),
            "net_quality_points": self.net_points,
            "net_quality_points_95": [self.net_low_points, self.net_high_points],
            "routed_by_tier": dict(self.routed_by_tier),
        }


def routed_tier(record: QueryRecord) -> str:
    """The tier the policy chose for a call: its shadow decision, else where it was served."""
    shadow = record.metadata.get(SHADOW_TIER)
    if shadow:
        return shadow
    return record.final_tier if record.kind == "cascade" else record.chosen_tier


class SavingsBuilder:
    """Accumulates labelled calls one at a time (the report streams the log)."""

    def __init__(
        self,
        tiers: Sequence[str],
        reference: str,
        labels: Mapping[str, Mapping[str, TierLabel]],
    ) -> None:
        self._tiers = tuple(tiers)
        self._reference = reference
        self._labels = labels
        self._seen: set[str] = set()
        self._routed_cost: list[float] = []
        self._reference_cost: list[float] = []
        self._diffs: list[int] = []
        self._by_tier: dict[str, int] = {}

    def add(self, record: QueryRecord) -> None:
        """Count `record` when every tier of its question is labelled (once per request)."""
        labels = self._labels.get(record.request_id)
        if labels is None or record.request_id in self._seen or record.status != "OK":
            return
        routed = routed_tier(record)
        if routed not in self._tiers or any(t not in labels for t in self._tiers):
            return
        self._seen.add(record.request_id)
        mine, ref = labels[routed], labels[self._reference]
        self._routed_cost.append(mine.cost_usd)
        self._reference_cost.append(ref.cost_usd)
        self._diffs.append(int(mine.verdict == "pass") - int(ref.verdict == "pass"))
        self._by_tier[routed] = self._by_tier.get(routed, 0) + 1

    def build(self) -> Savings | None:
        """The figures, or None when no call had a full set of labels."""
        n = len(self._diffs)
        if n == 0:
            return None
        wins = sum(d > 0 for d in self._diffs)
        losses = sum(d < 0 for d in self._diffs)
        net = (wins - losses) / n
        var = sum((d - net) ** 2 for d in self._diffs) / (n - 1) if n > 1 else 0.0
        half = Z_95 * math.sqrt(var / n)
        return Savings(
            reference_tier=self._reference,
            questions=n,
            routed_cost_usd=math.fsum(self._routed_cost),
            reference_cost_usd=math.fsum(self._reference_cost),
            win=Rate.of(wins, n),
            tie=Rate.of(n - wins - losses, n),
            loss=Rate.of(losses, n),
            net_points=100 * net,
            net_low_points=100 * (net - half),
            net_high_points=100 * (net + half),
            routed_by_tier={t: self._by_tier[t] for t in self._tiers if t in self._by_tier},
        )


def _interval(rate: Rate) -> str:
    return f"{100 * rate.rate:.1f} % [{100 * rate.low:.1f}, {100 * rate.high:.1f}]"


def format_savings(savings: Savings | None) -> list[str]:
    """The report's savings section (no lines when nothing is labelled)."""
    if savings is None:
        return []
    saved = savings.savings
    mix = ", ".join(f"{k} {v:,}" for k, v in savings.routed_by_tier.items())
    return [
        f"SAVINGS AGAINST {savings.reference_tier} on {savings.questions:,} labelled questions "
        f"(routed: {mix})",
        "  saved "
        + ("-" if saved is None else f"{100 * saved:.1f} %")
        + f" of the reference's answer cost (${savings.routed_cost_usd:.6f} routed, "
        f"${savings.reference_cost_usd:.6f} reference)",
        f"  judged against the reference (95 % intervals): win {_interval(savings.win)}, "
        f"tie {_interval(savings.tie)}, loss {_interval(savings.loss)}",
        f"  net quality {savings.net_points:+.1f} points "
        f"[{savings.net_low_points:+.1f}, {savings.net_high_points:+.1f}]",
    ]
