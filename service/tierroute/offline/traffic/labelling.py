"""`tierroute label`: every tier's answer to a sample of logged questions and a verdict on
each, stored per tier in the query log (table `tier_labels`).

The recipe is the article's: run each query through all tiers and evaluate the outputs.

- The sample: logged calls that hold their question's text (imported, `querylog.
  store_text`, audit or shadow samples), one per distinct question, stratified by query
  type like the audit (every type present gets a share). Questions a previous run started
  come first, so a rerun finishes them before it starts new ones.
- Each tier answers the question alone (no history: the log keeps the question only),
  capped at `max_output_tokens`, and the verdicts come from the serving side's labelling
  core (`cascade.labelling`, which live labelling uses too): by default the consensus of
  the tiers' and the probe's final answers, a judge call only where answers state none, and
  no tier grading its own answer except on a split vote.
- Money: before a question starts, its worst case is reserved (every missing answer at its
  input estimate x 1.5 and the output cap, the probe likewise, a judge call per tier at its
  cap). A question whose reservation would pass `max_spend_usd` is not started, and the run
  stops there. Its labels are stored as soon as its calls are paid for, and a stored
  (question, tier) is never asked again, so a stopped or failed run resumes without paying
  twice. An answer call that fails is not stored (it cost nothing); a judge that gives no
  usable verdict after its answer was paid is stored as "unavailable".
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

from tierroute.cascade.labelling import LabelBudget, Labeller, LabelMethod
from tierroute.errors import ConfigError
from tierroute.offline.audit import UNKNOWN_TYPE, stratified_sample
from tierroute.providers import Provider
from tierroute.querylog import QueryRecord, Store, TierLabel
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4


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
    method: LabelMethod = "consensus"

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
    method: str = "consensus"
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
    spent_probe_usd: float = 0.0
    spent_by_tier: dict[str, float] = field(default_factory=dict)
    questions_complete: int = 0
    log_spend_usd: float = 0.0
    log_questions: int = 0

    @property
    def spent_usd(self) -> float:
        """What this run paid."""
        return self.spent_answers_usd + self.spent_judge_usd + self.spent_probe_usd

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
            "method": self.method,
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
            "spent_probe_usd": round(self.spent_probe_usd, 9),
            "spent_by_tier_usd": {k: round(v, 9) for k, v in sorted(self.spent_by_tier.items())},
            "log_label_spend_usd": round(self.log_spend_usd, 9),
            "cost_per_question_usd": None if per_q is None else round(per_q, 9),
        }


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


async def run_label(
    store: Store,
    provider: Provider,
    settings: Settings,
    options: LabelOptions,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> LabelReport:
    """Label the sample within the budget; every labelled question is stored at once."""
    labeller = Labeller(
        provider,
        settings,
        method=options.method,
        reference=options.reference_tier,
        max_output_tokens=options.max_output_tokens,
        rng=random.Random(options.seed),
    )
    judge = labeller.judge
    pool, without_text = await candidates(store, options.since)
    existing = await store.fetch_tier_labels()
    known: dict[str, dict[str, TierLabel]] = defaultdict(dict)
    for lab in existing:
        known[lab.request_id][lab.tier] = lab
    sample = choose(pool, set(known), options.sample, options.seed)
    report = LabelReport(
        sample=len(sample),
        candidates=len(pool),
        without_text=without_text,
        reference_tier=judge.name,
        reference_model=judge.model,
        method=options.method,
        by_query_type=dict(Counter(r.query_type or UNKNOWN_TYPE for r in sample)),
        max_spend_usd=options.max_spend_usd,
    )
    names = [t.name for t in settings.tiers]
    todo: list[QueryRecord] = []
    for record in sample:
        have = sum(name in known[record.request_id] for name in names)
        report.units_total += len(names)
        report.units_already += have
        if have < len(names):
            todo.append(record)
    budget = LabelBudget(options.max_spend_usd)
    update = progress(len(todo)) if progress and todo else None
    stop = asyncio.Event()
    queue: asyncio.Queue[QueryRecord] = asyncio.Queue()
    for record in todo:
        queue.put_nowait(record)

    async def worker() -> None:
        while not stop.is_set():
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            have = known[record.request_id]
            text = record.query_text or ""
            worst = labeller.worst_case_usd(text, [t for t in settings.tiers if t.name not in have])
            if not budget.reserve(worst):
                report.stopped_by_budget = True
                stop.set()
                return
            done = await labeller.label(record.request_id, text, have)
            budget.settle(worst, done.paid_usd)
            if done.labels:
                await store.write_tier_labels(done.labels)
            report.units_failed += len(done.failed)
            for label in done.labels:
                if label.tier in names:
                    report.units_done += 1
                    report.unavailable_verdicts += label.verdict == "unavailable"
                    report.spent_answers_usd += label.cost_usd
                else:
                    report.spent_probe_usd += label.cost_usd
                report.spent_judge_usd += label.judge_cost_usd
                report.spent_by_tier[label.tier] = (
                    report.spent_by_tier.get(label.tier, 0.0) + label.total_cost_usd
                )
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
        f"  method: {report.method}; reference tier: {report.reference_tier} "
        f"({report.reference_model})",
        "  sample by query type: "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.by_query_type.items())),
        f"  units (question x tier): {report.units_total} in the sample, "
        f"{report.units_already} already labelled, {report.units_done} labelled now, "
        f"{report.units_failed} failed",
        f"  spent this run ${report.spent_usd:.6f} (answers ${report.spent_answers_usd:.6f}, "
        f"judge ${report.spent_judge_usd:.6f}, probe ${report.spent_probe_usd:.6f})"
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
