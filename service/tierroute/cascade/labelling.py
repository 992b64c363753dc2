"""Labelling one question: every tier's answer, and a verdict on each that no tier gives
itself. Shared by `tierroute label` (offline) and live labelling in the server
(`[shadow] label_rate`), so both label the same way.

Two methods (`LabelMethod`):

- `consensus` (the default). Every tier answers, and so does the agreement probe when one is
  configured (a cheap extra vote). When at least two answers state a final answer
  (`providers.answers.final_answer`), the reference is the answer most of them state; each
  answer passes when it states the reference. On a split vote (no answer stated more often
  than every other) the reference tier's stated answer decides, the one place a tier still
  grades itself. When fewer than two answers state a final answer (open-ended text), each
  answer goes to a judge call with the production judge prompt, and no answer is judged by
  its own tier: the reference tier judges the others, and the tier below it judges the
  reference tier's answer.
- `majority`: `consensus`, except that a split vote confirms no answer (every answer fails),
  so no tier ever grades itself.
- `judge`: the reference tier judges every answer, its own included (the self-graded labels
  of REFERENCE.md section 8, kept for comparison).

Money: `worst_case_usd` is what labelling a question can cost at most (every missing answer
at 1.5 x its input estimate and its output cap, the probe likewise, and a judge call per
tier at its cap); a caller reserves it on a `LabelBudget` before it starts and settles it
with what the calls cost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tierroute.cascade.limits import retry_delay
from tierroute.errors import ConfigError, ProviderError
from tierroute.providers import Completion, Message, Provider, estimate_tokens, prompts
from tierroute.providers.answers import final_answer
from tierroute.querylog import TierLabel
from tierroute.settings import ProbeConfig, Settings, TierConfig

logger = logging.getLogger(__name__)

LabelMethod = Literal["consensus", "majority", "judge"]
LABEL_METHODS: tuple[LabelMethod, ...] = ("consensus", "majority", "judge")
# The judge columns of a label decided by the answers' consensus (no judge call).
CONSENSUS_JUDGE = "consensus"
# Worst-case input tokens are the estimate times this: tokenizers differ (REFERENCE.md).
INPUT_MARGIN = 1.5
JUDGE_PROMPT_OVERHEAD_TOKENS = 400


class LabelBudget:
    """Spend so far plus reservations in flight, against an optional limit."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.reserved = 0.0
        self.spent = 0.0

    def reserve(self, amount: float) -> bool:
        """Hold `amount` when it fits under the limit with what is spent and held."""
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, paid: float) -> None:
        """Release a reservation and count what its calls cost."""
        self.reserved -= reserved
        self.spent += paid


def reference_tier(settings: Settings, name: str | None) -> TierConfig:
    """The reference tier: `name`, else `routing.reference_tier`, else the top tier."""
    chosen = name or settings.routing.reference_tier
    return settings.tier(chosen) if chosen else settings.tiers[-1]


def parse_method(value: str) -> LabelMethod:
    """A label method by name; ConfigError for any other."""
    for method in LABEL_METHODS:
        if value == method:
            return method
    raise ConfigError(f"label method must be one of {', '.join(LABEL_METHODS)}, not {value!r}")


async def call_with_retry(
    provider: Provider, settings: Settings, rng: random.Random, **kwargs: Any
) -> Completion:
    """One provider call, retried on a retryable error as the Cascade retries."""
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


@dataclass
class Labelled:
    """What labelling a question produced: new rows (tiers, then the probe), what they cost,
    and the tiers whose answer call failed (not stored, so a rerun asks again)."""

    labels: list[TierLabel] = field(default_factory=list)
    paid_usd: float = 0.0
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Answer:
    tier: TierConfig
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int

    @property
    def cost_usd(self) -> float:
        return self.tier.cost_usd(self.input_tokens, self.output_tokens)


@dataclass(frozen=True)
class _Verdict:
    verdict: str
    issues: tuple[str, ...] = ()
    judge: TierConfig | None = None
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0

    @property
    def judge_cost_usd(self) -> float:
        if self.judge is None:
            return 0.0
        return self.judge.cost_usd(self.judge_input_tokens, self.judge_output_tokens)


class Labeller:
    """Labels one question at a time with one method, judge and probe."""

    def __init__(
        self,
        provider: Provider,
        settings: Settings,
        *,
        method: LabelMethod = "consensus",
        reference: str | None = None,
        max_output_tokens: int = 1024,
        rng: random.Random | None = None,
    ) -> None:
        if max_output_tokens < 1:
            raise ConfigError("the labels' max output tokens must be at least 1")
        self._provider = provider
        self._settings = settings
        self.method: LabelMethod = method
        self.judge = reference_tier(settings, reference)
        self.probe: ProbeConfig | None = settings.agreement_probe() if method != "judge" else None
        self.max_output_tokens = max_output_tokens
        self._rng = rng or random.Random()

    def judge_of(self, tier: TierConfig) -> TierConfig:
        """Who judges `tier`'s answer: the reference tier, except under consensus for its own
        answer, judged by the tier below it (by the one above when it is the cheapest)."""
        if self.method == "judge" or tier.name != self.judge.name or len(self._settings.tiers) < 2:
            return self.judge
        names = [t.name for t in self._settings.tiers]
        at = names.index(tier.name)
        return self._settings.tiers[at - 1 if at > 0 else at + 1]

    def worst_case_usd(self, text: str, missing: Sequence[TierConfig]) -> float:
        """The most labelling `text` can cost with `missing` tiers still to answer."""
        asked = math.ceil(estimate_tokens(text) * INPUT_MARGIN)
        cap = self.max_output_tokens
        total = math.fsum(t.cost_usd(asked, cap) for t in missing)
        if self.probe is not None:
            total += self.probe.as_tier().cost_usd(asked, min(cap, self.probe.max_output_tokens))
        judge_in = asked + cap + JUDGE_PROMPT_OVERHEAD_TOKENS
        judge_out = self._settings.cascade.judge_max_output_tokens
        return total + math.fsum(
            self.judge_of(t).cost_usd(judge_in, judge_out) for t in self._settings.tiers
        )

    async def label(
        self, request_id: str, text: str, known: Mapping[str, TierLabel] | None = None
    ) -> Labelled:
        """Answers from the tiers not in `known`, and a verdict on each new answer."""
        known = dict(known or {})
        missing = [t for t in self._settings.tiers if t.name not in known]
        asks: list[TierConfig] = list(missing)
        if self.probe is not None and self.probe.label not in known:
            asks.append(self.probe.as_tier())
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._answer(tier, text, request_id)) for tier in asks]
        out = Labelled()
        fresh: list[_Answer] = []
        for tier, task in zip(asks, tasks, strict=True):
            answer = task.result()
            if answer is None:
                if tier.name in {t.name for t in missing}:
                    out.failed.append(tier.name)
                continue
            fresh.append(answer)
            out.paid_usd += answer.cost_usd
        everyone = {name: lab.answer_text or "" for name, lab in known.items()}
        everyone.update({a.tier.name: a.text for a in fresh})
        reference = self._consensus(everyone) if self.method != "judge" else None
        for answer in fresh:
            if reference is not None:
                verdict = _consensus_verdict(answer.text, *reference)
            elif answer.tier.name in {t.name for t in self._settings.tiers}:
                verdict = await self._judged(answer, text, request_id)
            else:
                verdict = _Verdict("unavailable", ("the probe is not judged",))
            out.paid_usd += verdict.judge_cost_usd
            out.labels.append(_label(request_id, answer, verdict))
        return out

    def _consensus(self, texts: Mapping[str, str]) -> tuple[str | None, str] | None:
        """(the reference final answer, how it was reached), or None when fewer than two
        answers state a final answer; the reference is None when a split vote under
        `majority` confirms no answer."""
        stated = {name: final_answer(t) for name, t in texts.items()}
        stated = {name: a for name, a in stated.items() if a}
        if len(stated) < 2:
            return None
        ranked = Counter(stated.values()).most_common()
        top, count = ranked[0]
        if count >= 2 and (len(ranked) == 1 or ranked[1][1] < count):
            return top, f"{count} of {len(stated)} answers state it"
        if self.method == "majority":
            return None, f"split vote ({len(stated)} answers): no answer is confirmed"
        own = stated.get(self.judge.name)
        if own is None:
            return None
        return own, f"split vote ({len(stated)} answers); the reference tier's answer decides"

    async def _answer(self, tier: TierConfig, text: str, request_id: str) -> _Answer | None:
        try:
            done = await call_with_retry(
                self._provider,
                self._settings,
                self._rng,
                model=tier.model,
                messages=[Message(role="user", content=text)],
                max_tokens=min(self.max_output_tokens, tier.max_output_tokens),
            )
        except ProviderError as exc:
            logger.warning("label: %s answer for %s failed: %s", tier.name, request_id, exc.kind)
            return None
        return _Answer(tier, done.text, done.stop_reason, done.input_tokens, done.output_tokens)

    async def _judged(self, answer: _Answer, text: str, request_id: str) -> _Verdict:
        judge = self.judge_of(answer.tier)
        try:
            graded = await call_with_retry(
                self._provider,
                self._settings,
                self._rng,
                model=judge.model,
                messages=prompts.judge_messages(text, answer.text),
                max_tokens=self._settings.cascade.judge_max_output_tokens,
                system=prompts.JUDGE_SYSTEM,
                tool=prompts.JUDGE_TOOL,
            )
        except ProviderError as exc:
            logger.warning("label: judge call for %s failed: %s", request_id, exc.kind)
            return _Verdict("unavailable", judge=judge)
        parsed = prompts.parse_verdict(graded.tool_input)
        verdict = "unavailable" if parsed.passes is None else ("pass" if parsed.passes else "fail")
        return _Verdict(
            verdict, tuple(parsed.issues), judge, graded.input_tokens, graded.output_tokens
        )


def _consensus_verdict(text: str, reference: str | None, how: str) -> _Verdict:
    if reference is None:
        return _Verdict("fail", (how,))
    stated = final_answer(text)
    if stated == reference:
        return _Verdict("pass", (f"states the reference answer: {how}",))
    said = stated or "no final answer"
    return _Verdict("fail", (f"states {said}; reference {reference}: {how}",))


def _label(request_id: str, answer: _Answer, verdict: _Verdict) -> TierLabel:
    judge = verdict.judge
    return TierLabel(
        request_id=request_id,
        tier=answer.tier.name,
        model=answer.tier.model,
        answer_text=answer.text,
        stop_reason=answer.stop_reason,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        cost_usd=answer.cost_usd,
        judge_tier=CONSENSUS_JUDGE if judge is None else judge.name,
        judge_model="" if judge is None else judge.model,
        verdict=verdict.verdict,
        issues=verdict.issues,
        judge_input_tokens=verdict.judge_input_tokens,
        judge_output_tokens=verdict.judge_output_tokens,
        judge_cost_usd=verdict.judge_cost_usd,
    )
