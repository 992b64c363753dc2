"""The cascade engine: answer on a tier, have the tier above judge it, escalate with context.

Transport-free: the gRPC servicer converts protobuf to `CascadeQuery` and `CascadeResult`
back, and maps the errors `CascadeEngine.run` raises to status codes:

- `InvalidRequest`: an unknown start tier, or self-routing with a start tier other than the
  cheapest; routing errors pass through unchanged.
- `DeadlineExceeded`: the request's deadline passed before any answer existed.
- `BudgetExhausted`: the attempt budget was spent before any answer existed.
- `AllTiersFailed`: every tier that could answer failed (`__cause__` is the last error).
- `asyncio.CancelledError`: the caller went away; every provider call in flight is cancelled
  before it propagates.

When an answer exists but nothing better can be had (the tiers above failed, or the deadline
or budget ran out), that answer is returned with `degraded=True` rather than an error. The
engine only decides; `TierCaller` makes every call. See docs/cascade.md for the whole set of
rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable

from opentelemetry import trace

from tierroute.cascade.agreement import Agreement
from tierroute.cascade.breaker import CIRCUIT_OPEN, BreakerBoard
from tierroute.cascade.calibrated import ModelCascade, ModelCascades
from tierroute.cascade.caller import Speculation, TierCaller
from tierroute.cascade.climb import (
    CHECK_JUDGING,
    FIXED_JUDGING,
    PLAN_JUDGING,
    Candidate,
    Climb,
    End,
    Exhausted,
    Interrupted,
    Judging,
    Refused,
    Stopped,
)
from tierroute.cascade.limits import AttemptBudget, Deadline
from tierroute.cascade.run import RunState
from tierroute.cascade.sampling import JudgeSampler
from tierroute.cascade.spend import SPEND_STOPS, Ledger, RequestSpend
from tierroute.cascade.streaming import AnswerText, EventStream
from tierroute.cascade.telemetry import CascadeTelemetry
from tierroute.cascade.types import (
    AGREEMENT_MODES,
    JUDGE_MODES,
    CallOutcome,
    CascadeQuery,
    CascadeResult,
    JudgeStatus,
    Stop,
)
from tierroute.errors import (
    AllTiersFailed,
    AnswerInterrupted,
    BudgetExhausted,
    ConfigError,
    DeadlineExceeded,
    InvalidRequest,
    ProviderError,
)
from tierroute.observability import Metrics
from tierroute.providers import Completion, Provider, final_answer, prompts
from tierroute.routing import (
    CHECK_DROPPED,
    PLAN_DROPPED,
    Decision,
    Reason,
    ReasonNote,
    Router,
    query_type,
)
from tierroute.settings import Settings

logger = logging.getLogger(__name__)


class CascadeEngine:
    """Runs cascades over the configured tiers with one provider."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        provider: Provider,
        *,
        rng_seed: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        tracer: trace.Tracer | None = None,
        provider_name: str = "anthropic",
        metrics: Metrics | None = None,
        breakers: BreakerBoard | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.cascade
        self._tiers = settings.tiers
        self._top = len(settings.tiers) - 1
        self._probe = settings.agreement_probe()
        self._router = router
        self._clock = clock
        self._telemetry = CascadeTelemetry.from_settings(
            settings, tracer=tracer, provider_name=provider_name, metrics=metrics
        )
        # Judge sampling and the speculative bound follow the model serving each call.
        self._model_cascades = ModelCascades(self._config)
        self._breakers = (
            breakers if breakers is not None else BreakerBoard.from_settings(settings, clock=clock)
        )
        if metrics is not None:
            self._breakers.subscribe(metrics.set_breaker_state)
        self._caller = TierCaller(
            settings,
            provider,
            breakers=self._breakers,
            telemetry=self._telemetry,
            rng=random.Random(rng_seed),
            sleep=sleep,
            clock=clock,
        )

    @property
    def breakers(self) -> BreakerBoard:
        """The per-tier circuit breakers consulted before every provider call."""
        return self._breakers

    @property
    def sampler(self) -> JudgeSampler:
        """The judge sampler of the model now serving (for reports of the rates in use)."""
        return self._model_cascade().sampler

    def _model_cascade(self) -> ModelCascade:
        """Judge sampling and speculative bound for the router's current model."""
        return self._model_cascades.of(self._router.scorer)

    async def run(
        self,
        query: CascadeQuery,
        *,
        deadline_s: float | None,
        events: EventStream | None = None,
        ledger: Ledger | None = None,
    ) -> CascadeResult:
        """Answer `query` within `deadline_s` seconds (None: the configured default).

        Every call is reserved at its worst case against the request's cost ceiling
        (`policy.max_cost_usd`) and, with `ledger`, its tenant's budget (`cascade.spend`).

        With `events` the run streams: every hop, verdict and committed piece of the
        answer's text is written to it as it happens, and last the result
        (docs/cascade.md, "Streaming").
        """
        config = self._config
        started = self._clock()
        seconds = config.default_deadline_s if deadline_s is None else deadline_s
        deadline = Deadline(self._clock, min(seconds, config.max_deadline_s))
        start_index, decision = self._start(query)
        strategy = decision.strategy if decision is not None else "self_routing"
        run = RunState(
            request_id=query.route.request_id or uuid.uuid4().hex,
            query=query,
            deadline=deadline,
            budget=AttemptBudget(config.max_attempts),
            started=started,
            events=events,
            spend=RequestSpend(query.route.max_cost_usd, ledger),
        )
        try:
            result = await self._cascade(run, start_index, decision)
        except BaseException as exc:
            self._telemetry.failed(run.request_id, strategy, exc)
            raise
        self._telemetry.finished(result, strategy)
        logger.info(
            "cascade %s: tier=%s start=%s judge=%s escalations=%d hops=%d cost_usd=%.6f "
            "degraded=%s",
            result.request_id,
            result.tier.name,
            self._tiers[result.start_tier_index].name,
            result.judge_status,
            len(result.escalation_reasons),
            len(result.hops),
            result.total_cost_usd,
            ",".join(result.degraded_reasons) or "no",
        )
        if events is not None:
            events.finish(result)
        return result

    # -- the start tier ------------------------------------------------------------------

    def _start(self, query: CascadeQuery) -> tuple[int, Decision | None]:
        self._check(query)
        agreement = query.judge_mode in AGREEMENT_MODES
        override: int | None = None
        if query.start_tier:
            try:
                override = self._settings.tier_index(query.start_tier)
            except ConfigError as exc:
                raise InvalidRequest(
                    f"start tier {query.start_tier!r} is not configured; "
                    f"use one of {[t.name for t in self._tiers]}"
                ) from exc
        if query.cheapest_only:
            # The tenant's budget is spent: the cheapest tier answers, whatever was asked.
            override = 0
        if query.self_routing:
            if override not in (None, 0):
                raise InvalidRequest(
                    "self-routing starts on the cheapest tier; "
                    f"start tier {query.start_tier!r} contradicts it"
                )
            return 0, None
        with self._telemetry.route_span() as span:
            # `decide`, not `route`: this span is the request's one route span. The cascade
            # thresholds assume a judge may check the answer; a request that turns judging
            # off starts where Route would, with nothing behind the start tier.
            never = query.judge_mode == "never"
            decision = self._router.decide(query.route, for_cascade=not never, unchecked=never)
            if query.cheapest_only:
                decision = self._cheapest(decision, query.route.tenant_id)
            else:
                if override is None and agreement and decision.tier_index != 0:
                    # The agreement rules start on the cheapest tier unless the caller says.
                    override = 0
                if override is not None:
                    decision = self._overridden(decision, override)
            self._telemetry.routed(span, decision)
            self._router.record_familiarity("cascade", decision)
        return decision.tier_index, decision

    def _check(self, query: CascadeQuery) -> None:
        """InvalidRequest for a request whose options are unknown or contradict each other."""
        if query.speculation not in ("default", "on", "off"):
            raise InvalidRequest(f"speculation mode {query.speculation!r} is unknown")
        if query.judge_mode not in JUDGE_MODES:
            raise InvalidRequest(f"judge mode {query.judge_mode!r} is unknown")
        if query.max_output_tokens is not None and query.max_output_tokens < 0:
            raise InvalidRequest("max_output_tokens must not be negative")
        if query.judge_mode in AGREEMENT_MODES and self._probe is None:
            raise InvalidRequest(
                f"judge mode {query.judge_mode!r} needs a probe: configure one with [[probes]]"
            )
        if query.judge_mode in AGREEMENT_MODES and query.self_routing:
            raise InvalidRequest("self-routing and the agreement modes cannot be combined")

    def _overridden(self, decision: Decision, override: int) -> Decision:
        """The decision with the caller's start tier in place of the routed one."""
        # The value policy's plan holds for the start tier it chose, and no other.
        moved = override != decision.tier_index
        dropped = decision.plan is not None and moved
        checked = decision.check_to is not None and moved
        note = ReasonNote(
            Reason.TIER_OVERRIDE,
            f"caller chose {self._tiers[override].name} over {decision.tier.name}"
            + (PLAN_DROPPED if dropped else "")
            + (CHECK_DROPPED if checked else ""),
        )
        return dataclasses.replace(
            decision,
            tier_index=override,
            tier=self._tiers[override],
            reasons=(*decision.reasons, note),
            plan=None if dropped else decision.plan,
            check_to=None if checked else decision.check_to,
        )

    def _cheapest(self, decision: Decision, tenant: str) -> Decision:
        """The decision moved to the cheapest tier: the tenant's budget is spent."""
        note = ReasonNote(
            Reason.TENANT_BUDGET,
            f"tenant {tenant!r} is over budget; the cheapest tier answers, unjudged",
        )
        return dataclasses.replace(
            decision,
            tier_index=0,
            tier=self._tiers[0],
            reasons=(*decision.reasons, note),
            plan=None,
            check_to=None,
        )

    @staticmethod
    def _speculate(
        query: CascadeQuery, decision: Decision | None, judged: bool, bound: float
    ) -> bool:
        if query.speculation == "off" or query.pinned or query.cheapest_only:
            return False
        if query.speculation == "on":
            return True
        if decision is not None and decision.check_to is not None:
            # An unfamiliar query's check escalates to the reference tier: running that
            # ahead on every such query would pay it most of the time the check saves it.
            return False
        # Speculation only pays when the cheap answer will be judged and may well fail.
        return decision is not None and judged and decision.confidence < bound

    def _judging(self, run: RunState, decision: Decision | None, sampler: JudgeSampler) -> Judging:
        """The request's judge mode decides; by default the value policy's plan, else the
        sampler, whose one draw covers every answer of the request."""
        mode = run.query.judge_mode
        if run.query.pinned or run.query.cheapest_only:
            return Judging(False, False, "skipped")
        if mode in FIXED_JUDGING:
            return FIXED_JUDGING[mode]
        if decision is not None and decision.check_to is not None:
            return CHECK_JUDGING
        if decision is not None and decision.plan is not None:
            return PLAN_JUDGING[decision.plan.judge]
        sampled = sampler.should_judge(run.request_id, query_type(run.query.route.text))
        return Judging(sampled, sampled, "sampled_out")

    # -- the cascade ---------------------------------------------------------------------

    async def _cascade(
        self, run: RunState, start_index: int, decision: Decision | None
    ) -> CascadeResult:
        model = self._model_cascade()
        climb = Climb.begin(
            run.query, start_index, decision, self._judging(run, decision, model.sampler)
        )
        ahead: int | None = None
        # An agreement check is no judge: by default nothing runs ahead of it (its
        # disagreements go up one tier at a time, as calibration measures them).
        judged = climb.judging.start and not climb.judging.by_agreement
        if climb.judging.check and decision is not None:
            climb.escalate_to = decision.check_to
        if start_index < self._top and self._speculate(
            run.query, decision, judged, model.speculative_bound
        ):
            ahead = climb.next_index
        # The one owner of the call run ahead: leaving the block cancels it if it is still in
        # flight, whichever way the climb ended. The result (or error) is made only after,
        # so a fall-back's calls never race it and no exit path cancels it itself.
        probe = None
        checks = climb.judging.by_agreement or climb.judging.check
        if checks and start_index < self._top and self._probe is not None:
            probe = self._probe.as_tier()
        async with (
            self._caller.speculate(run, ahead, climb.plain) as speculation,
            Agreement(self._caller, run, probe, climb.plain) as agreement,
        ):
            if checks:
                climb.agreement = agreement
            end = await self._climb(run, climb, speculation)
        return await self._conclude(run, climb, end)

    async def _climb(self, run: RunState, climb: Climb, speculation: Speculation) -> End:
        """Ask tier after tier, from the start tier up, until the cascade reaches an end."""
        while True:
            prestarted = speculation.take(climb.index)
            text = self._answer_text(run, climb, speculation.text if prestarted else None)
            outcome = await self._caller.answer(
                run, climb.index, climb.messages, prestarted=prestarted, text=text
            )
            committed_text_out = text is not None and text.sent and not run.query.stream_drafts
            if committed_text_out and outcome.completion is None:
                # Committed text is out and its stream broke: nothing may replace it.
                return Interrupted(climb.index, outcome)
            end = await self._answered(run, climb, outcome)
            if end is not None:
                return end

    def _answer_text(
        self, run: RunState, climb: Climb, held: AnswerText | None
    ) -> AnswerText | None:
        """Where a streamed request's answer call streams: live when it is committed.

        An answer is committed when no later step can withdraw it: it will not be judged
        (the top tier's, or one the plan, mode or sampler leaves unjudged). Self-routed
        answers are held until their confidence block is read and stripped. With drafts
        every other answer is live. A speculative call streamed held so far; it goes live
        when taken over as a committed answer.
        """
        events = run.events
        if events is None:
            return None
        index = climb.index
        committed = index == self._top or not climb.judging.judges(index, climb.start)
        live = not climb.self_routing and (committed or events.drafts)
        if held is not None:
            if live:
                held.go_live()
            return held
        return AnswerText(events, self._tiers[index].name, live=live)

    async def _answered(self, run: RunState, climb: Climb, outcome: CallOutcome) -> End | None:
        """Where the current tier's answer call leads: an end, or None having moved up."""
        if outcome.stop is not None:
            return Stopped(outcome.stop, climb.fallback)
        if outcome.circuit_open:
            return self._refused(run, climb)
        completion = outcome.completion
        if completion is None:
            assert outcome.error is not None  # an outcome is a completion, an error or a stop
            return self._provider_failed(run, climb, outcome.error)
        if completion.tool_calls:
            # A judge grades text answers: a tool call goes back to the caller unjudged.
            return Candidate.of(completion, climb.index, "tool_use")
        if climb.self_routing:
            return self._self_assessed(run, climb, completion)
        return await self._judge_if_due(run, climb, completion)

    async def _judge_if_due(
        self, run: RunState, climb: Climb, completion: Completion
    ) -> End | None:
        """A plain answer: the end when no judge is due for it (the top tier's never is)."""
        index = climb.index
        if index == self._top:
            return Candidate.of(completion, index, "not_required")
        if not climb.judging.judges(index, climb.start):
            return Candidate.of(completion, index, climb.judging.unjudged)
        if climb.judging.check and climb.agreement is not None:
            # An unfamiliar query's check: agreement with the probe where the answer states
            # a final answer, else a judge by the tier above.
            if self._probe is not None and final_answer(completion.text):
                return await self._agreed(run, climb, climb.agreement, completion)
            return await self._judged(run, climb, completion)
        if climb.agreement is not None:
            return await self._agreed(run, climb, climb.agreement, completion)
        return await self._judged(run, climb, completion)

    async def _agreed(
        self, run: RunState, climb: Climb, agreement: Agreement, completion: Completion
    ) -> End | None:
        """Check the answer by agreement: an end when it agrees, else None having moved up
        (with the plain question) and the answer held in case nothing better arrives."""
        index = climb.index
        disagreement = await agreement.check(completion.text, self._tiers[index].name)
        if disagreement is None:
            return Candidate.of(completion, index, "agreed")
        self._escalate(run, disagreement, index, climb.next_index)
        climb.fallback = Candidate.of(completion, index, "failed")
        climb.up(climb.plain)
        return None

    def _refused(self, run: RunState, climb: Climb) -> End | None:
        """The current tier's breaker is open: its degradation policy decides
        (docs/RELIABILITY.md)."""
        index = climb.index
        tier_name = self._tiers[index].name
        _degrade(run, f"{CIRCUIT_OPEN}:{tier_name}")
        action = self._breakers.action(tier_name)
        if action == "skip_to_next" and index < self._top and not run.query.pinned:
            note = ReasonNote(Reason.CIRCUIT_OPEN, f"{tier_name} circuit breaker is open")
            self._escalate(run, note, index, climb.next_index)
            climb.up()
            return None
        return Refused(index, action, climb.fallback)

    def _provider_failed(self, run: RunState, climb: Climb, error: ProviderError) -> End | None:
        """The current tier failed to answer: the next tier serves, if there is one."""
        index = climb.index
        if index == self._top or run.query.pinned:
            return Exhausted(index, error, climb.fallback)
        tier_name = self._tiers[index].name
        self._escalate(
            run,
            ReasonNote(Reason.PROVIDER_ERROR, f"{tier_name} failed with {error.kind}"),
            index,
            climb.next_index,
        )
        run.degraded.append(f"provider_error:{tier_name}:{error.kind}")
        climb.up()
        return None

    def _self_assessed(self, run: RunState, climb: Climb, completion: Completion) -> End | None:
        """A self-routed answer: accepted on its own stated confidence, else escalated."""
        index = climb.index
        answer, assessment = prompts.parse_self_assessment(completion.text)
        confidence = assessment.confidence
        if (
            confidence is not None
            and assessment.needs_escalation is False
            and confidence >= self._config.self_confidence_threshold
        ):
            return Candidate.of(completion, index, "self_accepted", answer)
        if confidence is None:
            detail = "confidence block missing or unparseable"
            climb.fallback = Candidate.of(completion, index, "unavailable", answer)
        else:
            detail = (
                f"stated confidence {confidence:.2f}, "
                f"needs_escalation={assessment.needs_escalation}"
            )
            climb.fallback = Candidate.of(completion, index, "failed", answer)
        self._escalate(run, ReasonNote(Reason.SELF_LOW_CONFIDENCE, detail), index, climb.next_index)
        climb.up()
        return None

    async def _judged(self, run: RunState, climb: Climb, completion: Completion) -> End | None:
        """Have the tier above judge the answer: an end when it passes, else None having
        moved up with the answer held in case nothing better arrives."""
        index = climb.index
        answer = completion.text
        answer_name = self._tiers[index].name
        judge_name = self._tiers[index + 1].name
        outcome = await self._caller.judge(run, index + 1, climb.question, answer)
        if outcome.stop is not None:
            # A judge the cost ceiling or the budget left out chose not to judge: skipped.
            status: JudgeStatus = "skipped" if outcome.stop in SPEND_STOPS else "unavailable"
            return Stopped(outcome.stop, Candidate.of(completion, index, status))
        if outcome.circuit_open:
            # Unjudged is not passed: escalate, holding the answer in case nothing better.
            note = ReasonNote(
                Reason.CIRCUIT_OPEN,
                f"{judge_name} circuit breaker is open; the {answer_name} answer was not judged",
            )
            self._escalate(run, note, index, climb.next_index)
            _degrade(run, f"{CIRCUIT_OPEN}:{judge_name}")
            climb.fallback = Candidate.of(completion, index, "unavailable")
            climb.up(climb.plain)
            return None
        verdict = outcome.verdict
        if verdict is not None and verdict.passes is True:
            return Candidate.of(completion, index, "passed")
        if verdict is not None and verdict.passes is False:
            note = ReasonNote(
                Reason.JUDGE_FAILED,
                f"{judge_name} failed the {answer_name} answer with {len(verdict.issues)} issue(s)",
            )
            self._escalate(run, note, index, climb.next_index)
            climb.fallback = Candidate.of(completion, index, "failed")
            climb.up(
                prompts.escalation_messages(
                    climb.question, answer, list(verdict.issues), climb.history, climb.turn
                )
            )
            return None
        why = (
            verdict.problem
            if verdict is not None
            else f"judge call failed with {self._error_kind(outcome)}"
        )
        self._escalate(
            run,
            ReasonNote(Reason.JUDGE_UNAVAILABLE, f"{judge_name} judge: {why}"),
            index,
            climb.next_index,
        )
        run.degraded.append(f"judge_unavailable:{judge_name}")
        climb.fallback = Candidate.of(completion, index, "unavailable")
        # No verdict means no issues to pass on: the next tier gets the plain question.
        climb.up(climb.plain)
        return None

    def _escalate(self, run: RunState, note: ReasonNote, index: int, to: int | None = None) -> None:
        """Record why the cascade moves from tier `index` to tier `to` (default the next).

        A draft streamed from tier `index` is not the answer: it is retracted.
        """
        run.reasons.append(note)
        target = index + 1 if to is None else to
        self._telemetry.escalated(note, self._tiers[index].name, self._tiers[target].name)
        if run.events is not None:
            run.events.withdraw(self._tiers[index].name, note.code.value.lower())

    @staticmethod
    def _error_kind(outcome: CallOutcome) -> str:
        return outcome.error.kind if outcome.error is not None else "unknown"

    # -- the end -------------------------------------------------------------------------

    async def _conclude(self, run: RunState, climb: Climb, end: End) -> CascadeResult:
        """The request's result, or its error, from how the climb ended."""
        if isinstance(end, Candidate):
            return self._result(run, climb, end)
        if isinstance(end, Stopped):
            if end.held is None and run.spend.serves_cheapest:
                return await self._cheapest_instead(run, climb)
            return self._stopped(run, climb, end.stop, end.held)
        name = self._tiers[end.index].name
        if isinstance(end, Interrupted):
            if end.outcome.stop == "deadline":
                raise DeadlineExceeded(
                    f"the request's deadline passed while the {name} answer streamed"
                )
            raise AnswerInterrupted(
                f"the {name} answer's stream failed after its text began "
                f"({self._error_kind(end.outcome)}); the text received is incomplete"
            ) from end.outcome.error
        if isinstance(end, Exhausted):
            if end.held is None:
                raise AllTiersFailed(
                    f"no tier could answer; {name} failed with {end.error.kind}"
                ) from end.error
            run.degraded.append(f"tier_unavailable:{name}")
            return self._result(run, climb, end.held)
        if run.query.pinned:
            raise AllTiersFailed(f"the {name} tier's circuit breaker is open")
        if end.action == "fail":
            raise AllTiersFailed(
                f"the {name} tier's circuit breaker is open and its degradation policy is to fail"
            )
        return await self._fall_back(run, climb, end.index, end.held)

    async def _fall_back(
        self, run: RunState, climb: Climb, index: int, held: Candidate | None
    ) -> CascadeResult:
        """Tier `index` is open and falls back: the answer held, else the nearest tier below.

        An answer from below is returned unjudged (`judge_status = "unavailable"`): the
        tier that would judge it is the one that is down, or sits above it.
        """
        name = self._tiers[index].name
        if held is not None:
            held_name = self._tiers[held.tier_index].name
            run.reasons.append(
                ReasonNote(
                    Reason.CIRCUIT_OPEN,
                    f"{name} circuit breaker is open; the {held_name} answer held is returned",
                )
            )
            return self._result(run, climb, held)
        for lower in range(index - 1, -1, -1):
            lower_name = self._tiers[lower].name
            outcome = await self._caller.answer(run, lower, climb.plain)
            if outcome.stop is not None:
                return self._stopped(run, climb, outcome.stop, None)
            if outcome.completion is not None:
                run.reasons.append(
                    ReasonNote(
                        Reason.CIRCUIT_OPEN,
                        f"{name} circuit breaker is open; {lower_name} answered instead, unjudged",
                    )
                )
                run.degraded.append(f"fell_back:{lower_name}")
                return self._result(
                    run, climb, Candidate.of(outcome.completion, lower, "unavailable")
                )
            if outcome.error is not None:
                run.degraded.append(f"provider_error:{lower_name}:{outcome.error.kind}")
            else:
                _degrade(run, f"{CIRCUIT_OPEN}:{lower_name}")
        raise AllTiersFailed(
            f"no tier could answer; the {name} circuit breaker is open and no tier below answered"
        )

    async def _cheapest_instead(self, run: RunState, climb: Climb) -> CascadeResult:
        """The tenant's budget refused the tier asked, and its policy serves the cheapest
        tier instead: its answer, unjudged."""
        note = ReasonNote(
            Reason.TENANT_BUDGET,
            f"tenant {run.query.route.tenant_id!r} is over budget; the cheapest tier answers, "
            "unjudged",
        )
        run.reasons.append(note)
        outcome = await self._caller.answer(run, 0, climb.plain)
        if outcome.error is not None and outcome.stop is None:
            raise AllTiersFailed(
                f"over budget, and the cheapest tier failed with {outcome.error.kind}"
            ) from outcome.error
        if outcome.completion is None:
            return self._stopped(run, climb, outcome.stop or "tenant_budget", None)
        return self._result(run, climb, Candidate.of(outcome.completion, 0, "skipped"))

    def _stopped(
        self, run: RunState, climb: Climb, stop: Stop, held: Candidate | None
    ) -> CascadeResult:
        """A request limit cut the cascade: the answer held, degraded, else its error."""
        if held is None:
            if stop in SPEND_STOPS and run.spend.refusal is not None:
                raise run.spend.refusal
            if stop == "deadline":
                raise DeadlineExceeded("the request's deadline passed before any answer")
            raise BudgetExhausted(
                f"the attempt budget of {self._config.max_attempts} calls was spent "
                "before any answer"
            )
        run.degraded.append(stop)
        return self._result(run, climb, held)

    def _result(self, run: RunState, climb: Climb, answer: Candidate) -> CascadeResult:
        now = self._clock()
        hops = tuple(draft.freeze(now) for draft in run.hops)
        return CascadeResult(
            request_id=run.request_id,
            answer=answer.text,
            tier=self._tiers[answer.tier_index],
            tier_index=answer.tier_index,
            start_tier_index=climb.start,
            hops=hops,
            total_cost_usd=sum(h.cost_usd for h in hops),
            total_latency_ms=(now - run.started) * 1000.0,
            escalated=answer.tier_index > climb.start,
            escalation_reasons=tuple(run.reasons),
            judge_status=answer.status,
            degraded=bool(run.degraded),
            degraded_reasons=tuple(run.degraded),
            decision=climb.decision,
            content=answer.content or ({"type": "text", "text": answer.text},),
            stop_reason=answer.stop_reason,
            tenant_over_budget=run.query.cheapest_only or run.spend.over_budget,
        )


def _degrade(run: RunState, reason: str) -> None:
    """Add a degraded reason once (an open tier can be met as judge, then as answerer)."""
    if reason not in run.degraded:
        run.degraded.append(reason)
