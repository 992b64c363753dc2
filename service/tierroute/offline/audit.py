"""Routing audits: re-judge a stratified sample of recently cheap-answered queries.

A query answered by the cheapest tier was never escalated: either its answer passed the
judge or it was not judged at all (sampled out). The audit sends a sample of them to the
judge one tier up, through the same provider layer the cascade uses (the replay backend or
Anthropic), with the cascade's own judge prompt, and counts the answers that fail: the
misroutes. It reports the sample size, the misroute count and rate and examples, and the
CLI exits non-zero above a configurable rate so that a scheduler can alert.

Where the question and answer come from: the query log never stores either by default. The
audit reads the audit samples the server keeps when `querylog.audit_sample_rate` > 0: for
that fraction of answered Cascade calls the record holds the question and the answer (see
docs/operations.md). Cheap-answered calls without them are counted, never judged.
Examples show a prefix of the question only when `querylog.store_text` is on; otherwise
the query's SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tierroute.cascade.labelling import call_with_retry
from tierroute.errors import ConfigError, ProviderError
from tierroute.providers import Provider, prompts
from tierroute.querylog import QueryRecord, Store
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE = 200
DEFAULT_MAX_MISROUTE_RATE = 0.05
DEFAULT_EXAMPLES = 10
# Concurrent judge calls: enough to hide latency, few enough to stay polite to the provider.
DEFAULT_CONCURRENCY = 4
UNKNOWN_TYPE = "unknown"


@dataclass(frozen=True)
class AuditOptions:
    """What to audit and when to alarm."""

    since: datetime | None = None
    sample: int = DEFAULT_SAMPLE
    max_misroute_rate: float = DEFAULT_MAX_MISROUTE_RATE
    seed: int = 0
    examples: int = DEFAULT_EXAMPLES
    concurrency: int = DEFAULT_CONCURRENCY
    prefix_chars: int = 80

    def __post_init__(self) -> None:
        if self.sample < 1:
            raise ConfigError("--sample must be at least 1")
        if not 0.0 <= self.max_misroute_rate <= 1.0:
            raise ConfigError("--max-misroute-rate must be within [0, 1]")
        if self.concurrency < 1 or self.examples < 0:
            raise ConfigError("concurrency must be positive and examples not negative")


@dataclass(frozen=True)
class Example:
    """One misrouted query: when, what kind, which query, and what the judge found."""

    request_id: str
    date: str
    query_type: str
    query: str
    issues: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "request_id": self.request_id,
            "date": self.date,
            "query_type": self.query_type,
            "query": self.query,
            "issues": list(self.issues),
        }


@dataclass
class Stratum:
    """Counts for one query type."""

    population: int = 0
    sampled: int = 0
    judged: int = 0
    misroutes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "population": self.population,
            "sampled": self.sampled,
            "judged": self.judged,
            "misroutes": self.misroutes,
            "misroute_rate": _rate(self.misroutes, self.judged),
        }


@dataclass(frozen=True)
class AuditReport:
    """The audit's figures; `misroute_rate` is over judged answers (None when none were)."""

    since: datetime | None
    answered_tier: str
    judge_tier: str
    judge_model: str
    cheap_answered: int
    without_text: int
    population: int
    sample_size: int
    judged: int
    unavailable: int
    misroutes: int
    max_misroute_rate: float
    judge_cost_usd: float
    by_query_type: dict[str, Stratum]
    examples: tuple[Example, ...]
    query_shown_as: str = "sha256"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def misroute_rate(self) -> float | None:
        """Misroutes over judged answers."""
        return _rate(self.misroutes, self.judged)

    @property
    def above_threshold(self) -> bool:
        """Whether the misroute rate is above the configured maximum."""
        rate = self.misroute_rate
        return rate is not None and rate > self.max_misroute_rate

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute audit --json` prints."""
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "answered_tier": self.answered_tier,
            "judge_tier": self.judge_tier,
            "judge_model": self.judge_model,
            "cheap_answered": self.cheap_answered,
            "without_text": self.without_text,
            "population": self.population,
            "sample_size": self.sample_size,
            "judged": self.judged,
            "unavailable": self.unavailable,
            "misroutes": self.misroutes,
            "misroute_rate": self.misroute_rate,
            "max_misroute_rate": self.max_misroute_rate,
            "above_threshold": self.above_threshold,
            "judge_cost_usd": round(self.judge_cost_usd, 9),
            "by_query_type": {k: v.as_dict() for k, v in sorted(self.by_query_type.items())},
            "query_shown_as": self.query_shown_as,
            "examples": [e.as_dict() for e in self.examples],
            "notes": list(self.notes),
        }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` draws over strata in proportion to their sizes (largest remainder).

    Every non-empty stratum gets at least one draw while draws last, so a rare query type
    is never left out; no stratum gets more than it holds.
    """
    population = sum(sizes.values())
    if total >= population:
        return dict(sizes)
    keys = sorted(k for k, n in sizes.items() if n > 0)
    share = {k: total * sizes[k] / population for k in keys}
    counts = {k: min(sizes[k], math.floor(share[k])) for k in keys}
    for k in keys:
        if counts[k] == 0 and sum(counts.values()) < total:
            counts[k] = 1
    # Hand out what is left by largest remainder; ties by name, so the split is stable.
    order = sorted(keys, key=lambda k: (-(share[k] - math.floor(share[k])), k))
    while sum(counts.values()) < total:
        progressed = False
        for k in order:
            if sum(counts.values()) >= total:
                break
            if counts[k] < sizes[k]:
                counts[k] += 1
                progressed = True
        if not progressed:
            break
    return counts


def stratified_sample(
    records: Sequence[QueryRecord], total: int, seed: int
) -> dict[str, list[QueryRecord]]:
    """A reproducible sample of `total` records, stratified by query type."""
    strata: dict[str, list[QueryRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.ts, r.request_id)):
        strata[record.query_type or UNKNOWN_TYPE].append(record)
    counts = allocate({k: len(v) for k, v in strata.items()}, total)
    rng = random.Random(seed)
    return {k: rng.sample(strata[k], counts[k]) for k in sorted(strata)}


@dataclass(frozen=True)
class _Judged:
    record: QueryRecord
    passes: bool | None
    issues: tuple[str, ...]
    cost_usd: float


async def _judge_one(
    provider: Provider,
    settings: Settings,
    judge_index: int,
    record: QueryRecord,
    rng: random.Random,
) -> _Judged:
    """One judge call with the cascade's judge prompt; retried like the cascade retries."""
    tier = settings.tiers[judge_index]
    config = settings.cascade
    # Only records holding both are sampled; `or ""` merely satisfies the type.
    messages = prompts.judge_messages(record.query_text or "", record.answer_text or "")
    try:
        completion = await call_with_retry(
            provider,
            settings,
            rng,
            model=tier.model,
            messages=messages,
            max_tokens=config.judge_max_output_tokens,
            system=prompts.JUDGE_SYSTEM,
            tool=prompts.JUDGE_TOOL,
        )
    except ProviderError as exc:
        logger.warning("audit: judge call for %s failed: %s", record.request_id, exc.kind)
        return _Judged(record, None, (), 0.0)
    verdict = prompts.parse_verdict(completion.tool_input)
    cost = tier.cost_usd(completion.input_tokens, completion.output_tokens)
    return _Judged(record, verdict.passes, verdict.issues, cost)


async def run_audit(
    store: Store, provider: Provider, settings: Settings, options: AuditOptions
) -> AuditReport:
    """Sample, re-judge and count; reads the log, calls the judge tier, writes nothing."""
    cheap, judge_index = settings.tiers[0], 1
    judge = settings.tiers[judge_index]
    answered = await store.fetch_queries(
        since=options.since, kind="cascade", final_tier=cheap.name, status="OK"
    )
    usable = [r for r in answered if r.query_text and r.answer_text is not None]
    sample = stratified_sample(usable, options.sample, options.seed)
    strata: dict[str, Stratum] = defaultdict(Stratum)
    for record in usable:
        strata[record.query_type or UNKNOWN_TYPE].population += 1
    rng = random.Random(options.seed)
    limit = asyncio.Semaphore(options.concurrency)

    async def bounded(record: QueryRecord) -> _Judged:
        async with limit:
            return await _judge_one(provider, settings, judge_index, record, rng)

    chosen = [record for kind in sorted(sample) for record in sample[kind]]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(bounded(record)) for record in chosen]
    results = [t.result() for t in tasks]

    show_text = settings.querylog.store_text
    examples: list[Example] = []
    unavailable = misroutes = 0
    for result in results:
        stratum = strata[result.record.query_type or UNKNOWN_TYPE]
        stratum.sampled += 1
        if result.passes is None:
            unavailable += 1
            continue
        stratum.judged += 1
        if not result.passes:
            misroutes += 1
            stratum.misroutes += 1
            examples.append(_example(result, show_text, options.prefix_chars))
    examples.sort(key=lambda e: (e.date, e.request_id), reverse=True)
    notes = []
    if len(usable) < len(answered):
        notes.append(
            f"{len(answered) - len(usable)} cheap-answered calls hold no audit sample "
            "(question and answer); raise querylog.audit_sample_rate to audit more"
        )
    if unavailable:
        notes.append(f"{unavailable} judge calls gave no usable verdict; they are not counted")
    return AuditReport(
        since=options.since,
        answered_tier=cheap.name,
        judge_tier=judge.name,
        judge_model=judge.model,
        cheap_answered=len(answered),
        without_text=len(answered) - len(usable),
        population=len(usable),
        sample_size=len(results),
        judged=len(results) - unavailable,
        unavailable=unavailable,
        misroutes=misroutes,
        max_misroute_rate=options.max_misroute_rate,
        judge_cost_usd=math.fsum(r.cost_usd for r in results),
        by_query_type=dict(strata),
        examples=tuple(examples[: options.examples]),
        query_shown_as="prefix" if show_text else "sha256",
        notes=tuple(notes),
    )


def _example(result: _Judged, show_text: bool, prefix_chars: int) -> Example:
    record = result.record
    if show_text and record.query_text:
        text = " ".join(record.query_text.split())
        query = text[:prefix_chars] + ("..." if len(text) > prefix_chars else "")
    else:
        query = record.query_sha256
    return Example(
        request_id=record.request_id,
        date=record.ts.date().isoformat(),
        query_type=record.query_type or UNKNOWN_TYPE,
        query=query,
        issues=result.issues,
    )


def format_report(report: AuditReport) -> str:
    """The readable form of an audit report."""
    rate = report.misroute_rate
    lines = [
        f"audit of {report.answered_tier}-answered queries"
        + (f" since {report.since.isoformat()}" if report.since else "")
        + f", judged by {report.judge_tier} ({report.judge_model})",
        f"  cheap-answered calls   {report.cheap_answered} "
        f"({report.population} with an audit sample)",
        f"  sample size            {report.sample_size} "
        f"(judged {report.judged}, no verdict {report.unavailable})",
        f"  misroutes              {report.misroutes}",
        "  misroute rate          "
        + ("-" if rate is None else f"{rate * 100:.2f}%")
        + f" (alert above {report.max_misroute_rate * 100:.2f}%)",
        f"  judge cost             ${report.judge_cost_usd:.6f}",
        "  by query type:",
    ]
    for name, stratum in sorted(report.by_query_type.items()):
        r = _rate(stratum.misroutes, stratum.judged)
        lines.append(
            f"    {name:12} population {stratum.population:5}  sampled {stratum.sampled:4}  "
            f"misroutes {stratum.misroutes:4}  rate " + ("-" if r is None else f"{r * 100:.1f}%")
        )
    if report.examples:
        lines.append("  examples:")
        for e in report.examples:
            issues = "; ".join(e.issues) or "(no issues given)"
            lines.append(f"    {e.date} {e.query_type:10} {e.query}  -- {issues}")
    lines.extend(f"  note: {n}" for n in report.notes)
    if report.above_threshold:
        lines.append("ABOVE THRESHOLD: retrain or review routing (tierroute retrain)")
    return "\n".join(lines)
