"""The traffic report: per tier and per model, what was asked, what it cost, how it went.

`summarize` is a pure function over records, so both stores give the same figures and tests
can check them against hand-computed values. Definitions (also in docs/querylog.md):

- Answered queries are Cascade calls that ended OK. Cost, tokens, ratings and escalation
  are over those; Route-only calls are counted by chosen tier under `route_decisions`, and
  calls that ended in an error are counted by status under `failed_calls`.
- A query belongs to its final tier and to the model of its final answer hop (the last
  completed answer hop on the final tier). Its cost is the whole call's, judges and failed
  attempts included; `spend_by_model` instead sums each hop's cost under the hop's model.
- Tokens of a query: input + output tokens of its final answer hop. p95 is nearest-rank:
  the ceil(0.95 n)-th smallest value.
- Rating: the latest feedback with a rating for the request; `avg_rating` averages the
  rated queries only (None when none were rated). `user_correct_rate` likewise from the
  latest feedback with a correct/incorrect flag.
- Cheap-tier opportunity: answered queries whose final tier is above the cheapest tier AND
  either no cheap-tier answer completed (routing sent them up, or the cheap call failed)
  or a judge passed a cheap-tier answer (a judge hop on the second tier with verdict pass).
  `cheap_tier_opportunity` is their count over all answered queries. Queries whose cheap
  answer the judge failed are not counted: the cheap tier was tried and was not enough.
- Unfamiliar share per day (UTC): of the calls that ended OK and whose routing model logged
  a familiarity (classifier decisions of a bundle with the signal, Route and Cascade alike),
  the share below the model's threshold (reason UNFAMILIAR_QUERY).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierroute.querylog.evidence import latest_feedback
from tierroute.querylog.records import FeedbackRecord, QueryRecord, ts_text
from tierroute.querylog.savings import Savings, format_savings

UNKNOWN_MODEL = "(unknown)"


def p95(values: Sequence[int]) -> int | None:
    """Nearest-rank 95th percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _norm(value: Any, prefix: str) -> str:
    # Accept "pass", "PASS" and the proto enum name "JUDGE_VERDICT_PASS" alike.
    return str(value or "").upper().removeprefix(prefix)


def final_answer_hop(record: QueryRecord) -> Mapping[str, Any] | None:
    """The hop whose answer was returned: the last completed answer hop on the final tier."""
    fallback: Mapping[str, Any] | None = None
    for hop in reversed(record.hops):
        if _norm(hop.get("role"), "HOP_ROLE_") != "ANSWER":
            continue
        if _norm(hop.get("outcome"), "HOP_OUTCOME_") != "OK":
            continue
        if hop.get("tier") == record.final_tier:
            return hop
        fallback = fallback or hop
    return fallback


def _hop_tokens(hop: Mapping[str, Any]) -> int:
    return int(hop.get("input_tokens") or 0) + int(hop.get("output_tokens") or 0)


def is_cheap_opportunity(record: QueryRecord, tiers: Sequence[str]) -> bool:
    """Answered above the cheapest tier although cheap was never completed or was passed."""
    if len(tiers) < 2 or record.final_tier in ("", tiers[0]):
        return False
    cheap, judge_of_cheap = tiers[0], tiers[1]
    cheap_answered = False
    cheap_passed = False
    for hop in record.hops:
        role = _norm(hop.get("role"), "HOP_ROLE_")
        if role == "ANSWER" and hop.get("tier") == cheap:
            cheap_answered = cheap_answered or _norm(hop.get("outcome"), "HOP_OUTCOME_") == "OK"
        if role == "JUDGE" and hop.get("tier") == judge_of_cheap:
            cheap_passed = cheap_passed or _norm(hop.get("verdict"), "JUDGE_VERDICT_") == "PASS"
    return not cheap_answered or cheap_passed


@dataclass
class _Acc:
    queries: int = 0
    cost: float = 0.0
    escalated: int = 0
    ratings: list[int] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def add(
        self, record: QueryRecord, rating: int | None, flag: bool | None, tokens: int | None
    ) -> None:
        self.queries += 1
        self.cost += record.total_cost_usd
        self.escalated += record.escalated
        if rating is not None:
            self.ratings.append(rating)
        if flag is not None:
            self.flags.append(flag)
        if tokens is not None:
            self.tokens.append(tokens)

    def figures(self, total: int) -> GroupFigures:
        return GroupFigures(
            queries=self.queries,
            share=self.queries / total if total else 0.0,
            total_cost_usd=self.cost,
            avg_cost_usd=self.cost / self.queries if self.queries else 0.0,
            avg_rating=sum(self.ratings) / len(self.ratings) if self.ratings else None,
            rated=len(self.ratings),
            user_correct_rate=sum(self.flags) / len(self.flags) if self.flags else None,
            p95_tokens=p95(self.tokens),
            escalation_rate=self.escalated / self.queries if self.queries else 0.0,
        )


@dataclass(frozen=True)
class GroupFigures:
    """The figures of one tier or one model."""

    queries: int
    share: float
    total_cost_usd: float
    avg_cost_usd: float
    avg_rating: float | None
    rated: int
    user_correct_rate: float | None
    p95_tokens: int | None
    escalation_rate: float


@dataclass(frozen=True)
class DayFamiliarity:
    """One day's calls with a logged familiarity, and how many were unfamiliar."""

    calls: int
    unfamiliar: int

    @property
    def share(self) -> float:
        """Unfamiliar calls over calls with a familiarity."""
        return self.unfamiliar / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        """For the JSON report."""
        return {"calls": self.calls, "unfamiliar": self.unfamiliar, "share": self.share}


@dataclass(frozen=True)
class Report:
    """Every figure `tierroute report` prints."""

    since: datetime | None
    until: datetime | None
    tiers: tuple[str, ...]
    overall: GroupFigures
    by_tier: dict[str, GroupFigures]
    by_model: dict[str, GroupFigures]
    spend_by_model: dict[str, float]
    cheap_tier: str
    above_cheap_queries: int
    cheap_tier_opportunity_queries: int
    route_decisions: int
    route_by_tier: dict[str, int]
    failed_calls: dict[str, int]
    # What the labelled sample says routing saves against the reference tier (savings.py).
    savings: Savings | None = None
    # Per UTC day ("2026-12-07"), the calls with a logged familiarity and the unfamiliar ones.
    unfamiliar_by_day: dict[str, DayFamiliarity] = field(default_factory=dict)

    @property
    def total_queries(self) -> int:
        """Answered queries."""
        return self.overall.queries

    @property
    def cheap_tier_opportunity(self) -> float:
        """Opportunity queries over answered queries (0 when there are none)."""
        total = self.overall.queries
        return self.cheap_tier_opportunity_queries / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        """One JSON object with every figure."""
        return {
            "since": None if self.since is None else ts_text(self.since),
            "until": None if self.until is None else ts_text(self.until),
            "total_queries": self.total_queries,
            "total_cost_usd": self.overall.total_cost_usd,
            "avg_cost_usd": self.overall.avg_cost_usd,
            "escalation_rate": self.overall.escalation_rate,
            "avg_rating": self.overall.avg_rating,
            "p95_tokens": self.overall.p95_tokens,
            "by_tier": {k: vars(v) for k, v in self.by_tier.items()},
            "by_model": {k: vars(v) for k, v in self.by_model.items()},
            "spend_by_model": dict(self.spend_by_model),
            "cheap_tier": self.cheap_tier,
            "above_cheap_queries": self.above_cheap_queries,
            "cheap_tier_opportunity_queries": self.cheap_tier_opportunity_queries,
            "cheap_tier_opportunity": self.cheap_tier_opportunity,
            "route_decisions": {"count": self.route_decisions, "by_tier": self.route_by_tier},
            "failed_calls": dict(self.failed_calls),
            # Only when the log holds labels (`tierroute label`, live labelling).
            **({} if self.savings is None else {"savings": self.savings.to_json()}),
            "unfamiliar_by_day": {k: v.to_json() for k, v in self.unfamiliar_by_day.items()},
        }


class ReportBuilder:
    """Accumulates records one at a time, so a large log is never held in memory."""

    def __init__(self, tiers: Sequence[str], feedback: Iterable[FeedbackRecord]) -> None:
        self._tiers = tuple(tiers)
        self._ratings, self._flags = latest_feedback(feedback)
        self._overall = _Acc()
        self._by_tier: dict[str, _Acc] = {name: _Acc() for name in tiers}
        self._by_model: dict[str, _Acc] = defaultdict(_Acc)
        self._spend: dict[str, float] = defaultdict(float)
        self._route_by_tier: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._above_cheap = 0
        self._opportunities = 0
        # UTC day -> [calls with a familiarity, unfamiliar calls]
        self._days: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, record: QueryRecord) -> None:
        """Count one logged call."""
        if record.status != "OK":
            self._failed[record.status or "UNKNOWN"] += 1
            return
        if record.familiarity is not None and math.isfinite(record.familiarity):
            day = self._days[record.ts.date().isoformat()]
            day[0] += 1
            day[1] += record.unfamiliar
        if record.kind == "route":
            self._route_by_tier[record.chosen_tier] += 1
            return
        hop = final_answer_hop(record)
        tokens = None if hop is None else _hop_tokens(hop)
        model = UNKNOWN_MODEL if hop is None else str(hop.get("model") or UNKNOWN_MODEL)
        rating = self._ratings.get(record.request_id)
        flag = self._flags.get(record.request_id)
        self._overall.add(record, rating, flag, tokens)
        self._by_tier.setdefault(record.final_tier, _Acc()).add(record, rating, flag, tokens)
        self._by_model[model].add(record, rating, flag, tokens)
        for h in record.hops:
            self._spend[str(h.get("model") or UNKNOWN_MODEL)] += float(h.get("cost_usd") or 0.0)
        if self._tiers and record.final_tier not in ("", self._tiers[0]):
            self._above_cheap += 1
            self._opportunities += is_cheap_opportunity(record, self._tiers)

    def build(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        savings: Savings | None = None,
    ) -> Report:
        """The report over everything added (with the labelled sample's savings, if any)."""
        total = self._overall.queries
        return Report(
            since=since,
            until=until,
            tiers=self._tiers,
            overall=self._overall.figures(total),
            by_tier={name: acc.figures(total) for name, acc in self._by_tier.items()},
            by_model={name: self._by_model[name].figures(total) for name in sorted(self._by_model)},
            spend_by_model={name: self._spend[name] for name in sorted(self._spend)},
            cheap_tier=self._tiers[0] if self._tiers else "",
            above_cheap_queries=self._above_cheap,
            cheap_tier_opportunity_queries=self._opportunities,
            route_decisions=sum(self._route_by_tier.values()),
            route_by_tier=dict(sorted(self._route_by_tier.items())),
            failed_calls=dict(sorted(self._failed.items())),
            savings=savings,
            unfamiliar_by_day={
                day: DayFamiliarity(calls, unfamiliar)
                for day, (calls, unfamiliar) in sorted(self._days.items())
            },
        )


def summarize(
    queries: Iterable[QueryRecord],
    feedback: Iterable[FeedbackRecord],
    tiers: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Aggregate a query log; `tiers` are the configured tier names, cheapest first."""
    builder = ReportBuilder(tiers, feedback)
    for record in queries:
        builder.add(record)
    return builder.build(since=since, until=until)


def _money(value: float) -> str:
    # Per-query costs are fractions of a cent: keep their significant digits.
    if value < 1:
        return f"${value:.6f}"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(report: Report) -> str:
    """The report as readable fixed-width text."""
    window = f"since {ts_text(report.since)}" if report.since is not None else "over the whole log"
    o = report.overall
    lines = [
        f"tierroute query log report, {window}",
        f"answered queries {report.total_queries:,}   total cost {_money(o.total_cost_usd)}   "
        f"avg {_money(o.avg_cost_usd)}/query   escalated {_pct(o.escalation_rate)}   "
        f"avg rating {_opt(o.avg_rating, '.2f')}   p95 tokens {_opt(o.p95_tokens, ',')}",
        "",
    ]
    header = (
        f"{'':<28}{'queries':>9}{'share':>9}{'total cost':>13}{'avg cost':>12}"
        f"{'rating':>8}{'rated':>7}{'p95 tok':>9}{'escalated':>11}"
    )
    for title, groups in (("by tier", report.by_tier), ("by model", report.by_model)):
        lines.append(title.upper() + header[len(title) :])
        for name, g in groups.items():
            lines.append(
                f"{name[:27]:<28}{g.queries:>9,}{_pct(g.share):>9}{_money(g.total_cost_usd):>13}"
                f"{_money(g.avg_cost_usd):>12}{_opt(g.avg_rating, '.2f'):>8}{g.rated:>7,}"
                f"{_opt(g.p95_tokens, ','):>9}{_pct(g.escalation_rate):>11}"
            )
        lines.append("")
    if report.spend_by_model:
        lines.append("SPEND BY MODEL (every call, judges and failed attempts included)")
        lines.extend(f"  {name:<26}{_money(v):>13}" for name, v in report.spend_by_model.items())
        lines.append("")
    lines.append(
        f"cheap-tier opportunity: {_pct(report.cheap_tier_opportunity)} of answered queries\n"
        f"  ({report.cheap_tier_opportunity_queries:,} of the {report.above_cheap_queries:,} "
        f"answered above {report.cheap_tier or 'the cheapest tier'} had no completed cheap "
        "answer, or one a judge passed)"
    )
    if report.route_decisions:
        mix = ", ".join(f"{k or '-'} {v:,}" for k, v in report.route_by_tier.items())
        lines.append(f"route-only decisions: {report.route_decisions:,} ({mix})")
    if report.failed_calls:
        errors = ", ".join(f"{k} {v:,}" for k, v in report.failed_calls.items())
        lines.append(f"calls that ended in an error: {errors}")
    if report.unfamiliar_by_day:
        lines.extend(
            ["", "UNFAMILIAR QUERIES BY DAY (UTC; familiarity below the model's threshold)"]
        )
        lines.extend(
            f"  {day}  {d.unfamiliar:>7,} of {d.calls:>8,} calls  {_pct(d.share):>8}"
            for day, d in report.unfamiliar_by_day.items()
        )
    if report.savings is not None:
        lines.extend(["", *format_savings(report.savings)])
    return "\n".join(lines)
