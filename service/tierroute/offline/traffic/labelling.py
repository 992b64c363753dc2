"""`tierroute label`: every tier's answer to a sample of logged questions, graded by a
reference judge, stored per tier in the query log (table `tier_labels`).

The recipe is the article's: run each query through all tiers and evaluate the outputs.

- The sample: logged calls that hold their question's text (imported, `querylog.
  store_text`, audit or shadow samples), one per distinct question, stratified by query
  type like the audit (every type present gets a share). Questions a previous run started
  come first, so a rerun finishes them before it starts new ones.
- Each tier answers the question alone (no history: the log keeps the question only),
  capped at `max_output_tokens`; the reference judge (by default the top tier) grades the
  answer with the production judge prompt and tool (`providers.prompts`). The top tier's
  own answer is graded by itself when it is the reference: say so when reading its labels.
- Money: before each (question, tier) unit starts, its worst case is reserved: the answer
  at its input estimate x 1.5 and the full output cap, the judge likewise with the answer at
  the cap. A unit whose reservation would pass `max_spend_usd` is not started, and the run
  stops there. Each unit is stored as soon as its two calls are paid for, and a stored
  (question, tier) is never asked again, so a stopped or failed run resumes without
  paying twice. An answer call that fails is not stored (it cost nothing); a judge that
  gives no usable verdict after its answer was paid is stored as "unavailable".
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierroute.cascade import retry_delay
from tierroute.errors import ConfigError, ProviderError
from tierroute.offline.audit import UNKNOWN_TYPE, stratified_sample
from tierroute.providers import Completion, Message, Provider, estimate_tokens, prompts
from tierroute.querylog import QueryRecord, Store, TierLabel
from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
# Worst-case input tokens are the estimate times this: tokenizers differ (REFERENCE.md).
INPUT_MARGIN = 1.5
JUDGE_PROMPT_OVERHEAD_TOKENS = 400


@dataclass(frozen=True)
class LabelOptions:
    """What to label, with what, and how much it may cost."""

    sample: int
    since: datetime | None = None
    max_spend_usd: float | None = None
    reference_tier: str | None = None
    max_output_tokens: int = 1024
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample < 1:
            raise ConfigError("--sample must be at least 1")
        if self.max_spend_usd is not None and self.max_spend_usd <= 0:
            raise ConfigError("--max-spend-usd must be positive")
        if self.max_output_tokens < 1 or self.concurrency < 1:
            raise ConfigError("--max-output-tokens and --concurrency must be at least 1")


@dataclass
class LabelReport:
    """What a label run did and spent."""

    sample: int
    candidates: int
    without_text: int
    reference_tier: str
    reference_model: str
    by_query_type: dict[str, int] = field(default_factory=dict)
    units_total: int = 0
    units_already: int = 0
    units_done: int = 0
    units_failed: int = 0
    unavailable_verdicts: int = 0
    stopped_by_budget: bool = False
    max_spend_usd: float | None = None
    spent_answers_usd: float = 0.0
    spent_judge_usd: float = 0.0
    spent_by_tier: dict[str, float] = field(default_factory=dict)
    questions_complete: int = 0
    log_spend_usd: float = 0.0
    log_questions: int = 0

    @property
    def spent_usd(self) -> float:
        """What this run paid."""
        return self.spent_answers_usd + self.spent_judge_usd

    @property
    def cost_per_question_usd(self) -> float | None:
        """Mean labelling cost of a fully labelled question in the log (all tiers + judge)."""
        return self.log_spend_usd / self.log_questions if self.log_questions else None

    @property
    def complete(self) -> bool:
        """Whether every unit of the sample is labelled."""
        return self.units_already + self.units_done == self.units_total

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute label --json` prints."""
        per_q = self.cost_per_question_usd
        return {
            "sample": self.sample,
            "candidates_with_text": self.candidates,
            "calls_without_text": self.without_text,
            "reference_tier": self.reference_tier,
            "reference_model": self.reference_model,
            "sampled_by_query_type": dict(sorted(self.by_query_type.items())),
            "units": {
                "total": self.units_total,
                "already_labelled": self.units_already,
                "labelled_now": self.units_done,
                "failed": self.units_failed,
            },
            "questions_fully_labelled": self.questions_complete,
            "unavailable_verdicts": self.unavailable_verdicts,
            "complete": self.complete,
            "stopped_by_budget": self.stopped_by_budget,
            "max_spend_usd": self.max_spend_usd,
            "spent_usd": round(self.spent_usd, 9),
            "spent_answers_usd": round(self.spent_answers_usd, 9),
            "spent_judge_usd": round(self.spent_judge_usd, 9),
            "spent_by_tier_usd": {k: round(v, 9) for k, v in sorted(self.spent_by_tier.items())},
            "log_label_spend_usd": round(self.log_spend_usd, 9),
            "cost_per_question_usd": None if per_q is None else round(per_q, 9),
        }


@dataclass(frozen=True)
class _Unit:
    record: QueryRecord
    tier: TierConfig


def reference(settings: Settings, name: str | None) -> TierConfig:
    """The reference judge's tier: `name`, else the top tier."""
    return settings.tier(name) if name else settings.tiers[-1]


def worst_case_usd(
    text: str, tier: TierConfig, judge: TierConfig, max_output: int, judge_output: int
) -> float:
    """The most one unit can cost: the tier's answer and the judge's call at their caps."""
    asked = math.ceil(estimate_tokens(text) * INPUT_MARGIN)
    answer = tier.cost_usd(asked, max_output)
    judge_in = asked + max_output + JUDGE_PROMPT_OVERHEAD_TOKENS
    return answer + judge.cost_usd(judge_in, judge_output)


async def candidates(store: Store, since: datetime | None) -> tuple[list[QueryRecord], int]:
    """Logged OK calls with text, one per distinct question (the first), and how many lacked it."""
    seen: dict[str, QueryRecord] = {}
    without_text = 0
    async for record in store.iter_queries(since=since):
        if record.status != "OK":
            continue
        if not record.query_text or not record.query_text.strip():
            without_text += 1
            continue
        seen.setdefault(record.query_sha256, record)
    return list(seen.values()), without_text


def choose(
    pool: Sequence[QueryRecord], started: set[str], total: int, seed: int
) -> list[QueryRecord]:
    """The sample: questions already started first, then a stratified draw of the rest."""
    first = sorted((r for r in pool if r.request_id in started), key=lambda r: r.request_id)
    first = first[:total]
    rest = [r for r in pool if r.request_id not in started]
    drawn = stratified_sample(rest, total - len(first), seed) if total > len(first) else {}
    return first + [r for kind in sorted(drawn) for r in drawn[kind]]


class _Budget:
    """Spend so far plus reservations in flight, against an optional limit."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.reserved = 0.0
        self.spent = 0.0

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, paid: float) -> None:
        self.reserved -= reserved
        self.spent += paid


async def _call(
    provider: Provider,
    settings: Settings,
    rng: random.Random,
    **kwargs: Any,
) -> Completion:
    config = settings.cascade
    retries = 0
    while True:
        try:
            return await provider.complete(timeout_s=config.per_call_timeout_s, **kwargs)
        except ProviderError as exc:
            if not exc.retryable or retries >= config.max_retries_per_tier:
                raise
            retries += 1
            delay = retry_delay(
                exc, retries, config.retry_base_delay_s, config.retry_max_delay_s, rng
            )
            await asyncio.sleep(delay)


async def label_unit(
    provider: Provider,
    settings: Settings,
    unit: _Unit,
    *,
    judge: TierConfig,
    options: LabelOptions,
    rng: random.Random,
) -> tuple[TierLabel | None, float]:
    """One tier's answer and its verdict; (None, 0) when the answer call failed."""
    text = unit.record.query_text or ""
    try:
        answer = await _call(
            provider,
            settings,
            rng,
            model=unit.tier.model,
            messages=[Message(role="user", content=text)],
            max_tokens=options.max_output_tokens,
        )
    except ProviderError as exc:
        logger.warning(
            "label: %s answer for %s failed: %s", unit.tier.name, unit.record.request_id, exc.kind
        )
        return None, 0.0
    answer_cost = unit.tier.cost_usd(answer.input_tokens, answer.output_tokens)
    verdict = "unavailable"
    issues: tuple[str, ...] = ()
    judge_in = judge_out = 0
    judge_cost = 0.0
    try:
        graded = await _call(
            provider,
            settings,
            rng,
            model=judge.model,
            messages=prompts.judge_messages(text, answer.text),
            max_tokens=settings.cascade.judge_max_output_tokens,
            system=prompts.JUDGE_SYSTEM,
            tool=prompts.JUDGE_TOOL,
        )
    except ProviderError as exc:
        logger.warning("label: judge call for %s failed: %s", unit.record.request_id, exc.kind)
    else:
        judge_in, judge_out = graded.input_tokens, graded.output_tokens
        judge_cost = judge.cost_usd(judge_in, judge_out)
        parsed = prompts.parse_verdict(graded.tool_input)
        if parsed.passes is not None:
            verdict, issues = ("pass" if parsed.passes else "fail"), parsed.issues
    label = TierLabel(
        request_id=unit.record.request_id,
        tier=unit.tier.name,
        model=unit.tier.model,
        answer_text=answer.text,
        stop_reason=answer.stop_reason,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        cost_usd=answer_cost,
        judge_tier=judge.name,
        judge_model=judge.model,
        verdict=verdict,
        issues=tuple(issues),
        judge_input_tokens=judge_in,
        judge_output_tokens=judge_out,
        judge_cost_usd=judge_cost,
    )
    return label, answer_cost + judge_cost


async def run_label(
    store: Store,
    provider: Provider,
    settings: Settings,
    options: LabelOptions,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> LabelReport:
    """Label the sample within the budget; every paid unit is stored at once."""
    judge = reference(settings, options.reference_tier)
    pool, without_text = await candidates(store, options.since)
    existing = await store.fetch_tier_labels()
    done = {(lab.request_id, lab.tier) for lab in existing}
    sample = choose(pool, {lab.request_id for lab in existing}, options.sample, options.seed)
    report = LabelReport(
        sample=len(sample),
        candidates=len(pool),
        without_text=without_text,
        reference_tier=judge.name,
        reference_model=judge.model,
        by_query_type=dict(Counter(r.query_type or UNKNOWN_TYPE for r in sample)),
        max_spend_usd=options.max_spend_usd,
    )
    units = []
    for record in sample:
        for tier in settings.tiers:
            report.units_total += 1
            if (record.request_id, tier.name) in done:
                report.units_already += 1
            else:
                units.append(_Unit(record, tier))
    budget = _Budget(options.max_spend_usd)
    rng = random.Random(options.seed)
    update = progress(len(units)) if progress and units else None
    judge_cap = settings.cascade.judge_max_output_tokens
    stop = asyncio.Event()
    queue: asyncio.Queue[_Unit] = asyncio.Queue()
    for unit in units:
        queue.put_nowait(unit)

    async def worker() -> None:
        while not stop.is_set():
            try:
                unit = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            worst = worst_case_usd(
                unit.record.query_text or "",
                unit.tier,
                judge,
                options.max_output_tokens,
                judge_cap,
            )
            if not budget.reserve(worst):
                report.stopped_by_budget = True
                stop.set()
                return
            label, paid = await label_unit(
                provider, settings, unit, judge=judge, options=options, rng=rng
            )
            budget.settle(worst, paid)
            if label is None:
                report.units_failed += 1
            else:
                await store.write_tier_labels([label])
                report.units_done += 1
                report.spent_answers_usd += label.cost_usd
                report.spent_judge_usd += label.judge_cost_usd
                report.spent_by_tier[unit.tier.name] = (
                    report.spent_by_tier.get(unit.tier.name, 0.0) + label.total_cost_usd
                )
                report.unavailable_verdicts += label.verdict == "unavailable"
            if update:
                update(1)

    async with asyncio.TaskGroup() as group:
        for _ in range(options.concurrency):
            group.create_task(worker())
    _log_totals(report, await store.fetch_tier_labels(), settings, {r.request_id for r in sample})
    return report


def _log_totals(
    report: LabelReport, labels: Sequence[TierLabel], settings: Settings, sample: set[str]
) -> None:
    tiers_of: dict[str, set[str]] = defaultdict(set)
    cost_of: dict[str, float] = defaultdict(float)
    for lab in labels:
        tiers_of[lab.request_id].add(lab.tier)
        cost_of[lab.request_id] += lab.total_cost_usd
    names = {t.name for t in settings.tiers}
    full = [rid for rid, tiers in tiers_of.items() if names <= tiers]
    report.questions_complete = sum(1 for rid in full if rid in sample)
    report.log_questions = len(full)
    report.log_spend_usd = math.fsum(cost_of[rid] for rid in full)


def format_report(report: LabelReport) -> str:
    """The readable form of a label run."""
    per_q = report.cost_per_question_usd
    lines = [
        f"labelled {report.questions_complete} of {report.sample} sampled questions "
        f"({report.candidates} distinct logged questions with text; {report.without_text} "
        "calls without text)",
        f"  reference judge: {report.reference_tier} ({report.reference_model})",
        "  sample by query type: "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.by_query_type.items())),
        f"  units (question x tier): {report.units_total} in the sample, "
        f"{report.units_already} already labelled, {report.units_done} labelled now, "
        f"{report.units_failed} failed",
        f"  spent this run ${report.spent_usd:.6f} (answers ${report.spent_answers_usd:.6f}, "
        f"judge ${report.spent_judge_usd:.6f})"
        + ("" if report.max_spend_usd is None else f" of at most ${report.max_spend_usd:.6f}"),
    ]
    if per_q is not None:
        lines.append(
            f"  labelling cost ${per_q:.6f} per question ({report.log_questions} questions "
            f"in the log): 1,000 questions ~ ${per_q * 1000:.2f}"
        )
    if report.unavailable_verdicts:
        lines.append(f"  {report.unavailable_verdicts} verdicts unavailable (stored as such)")
    if report.stopped_by_budget:
        lines.append("STOPPED before passing the spend limit; rerun to continue (paid work kept)")
    elif not report.complete:
        lines.append("INCOMPLETE: some calls failed; rerun to retry them")
    return "\n".join(lines)
