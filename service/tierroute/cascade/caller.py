"""One provider call to one tier, made safely, and the speculative call that may run ahead.

`TierCaller` asks the tier's circuit breaker for a permit, charges the request's attempt
budget, gives the provider the per-call timeout cut by the request's deadline, retries the
top tier's retryable errors after `retry_delay`, and records every call as a hop with its
span. Provider errors come back as outcomes; only `asyncio.CancelledError` is raised.
`Speculation` owns the one call a request may start ahead of need and cancels it on the way
out, whichever way out the cascade takes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from tierroute.cascade.breaker import CIRCUIT_OPEN, BreakerBoard, Permit
from tierroute.cascade.limits import retry_delay
from tierroute.cascade.run import RunState
from tierroute.cascade.spend import SPEND_STOPS, Held
from tierroute.cascade.streaming import (
    AnswerText,
    HopFinishedEvent,
    HopStartedEvent,
    VerdictEvent,
)
from tierroute.cascade.telemetry import CascadeTelemetry
from tierroute.cascade.types import CallOutcome, HopDraft, HopRole, Stop
from tierroute.errors import ProviderConnectionError, ProviderError, ProviderTimeout
from tierroute.observability.names import CANCEL_NOT_NEEDED, CANCEL_REQUEST_ENDED
from tierroute.providers import (
    AnswerParams,
    Completion,
    Message,
    Provider,
    TextDelta,
    estimate_tokens,
    message_body,
    prompt_tokens,
    prompts,
)
from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)


class TierCaller:
    """Makes each provider call of a cascade within its request's limits, and records it."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        *,
        breakers: BreakerBoard | None = None,
        telemetry: CascadeTelemetry | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = settings.cascade
        self._tiers = settings.tiers
        self._top = len(settings.tiers) - 1
        self._provider = provider
        self._breakers = (
            breakers if breakers is not None else BreakerBoard.from_settings(settings, clock=clock)
        )
        self._telemetry = (
            telemetry if telemetry is not None else CascadeTelemetry.from_settings(settings)
        )
        # Only back-off jitter draws on it; seeded so that runs repeat.
        self._rng = rng if rng is not None else random.Random(0)
        self._sleep = sleep
        self._clock = clock

    async def answer(
        self,
        run: RunState,
        index: int,
        messages: list[Message],
        *,
        prestarted: asyncio.Task[CallOutcome] | None = None,
        text: AnswerText | None = None,
    ) -> CallOutcome:
        """Tier `index`'s answer, retried with back-off only when no higher tier can serve.

        `prestarted` is the tier's speculative call, already under way: its outcome is the
        first attempt's. With `text` the call streams into it; a retry is made only when
        that text can be taken back (docs/cascade.md, "Streaming").
        """
        retries = 0
        while True:
            if prestarted is not None:
                outcome = await prestarted
                prestarted = None
                if outcome.stop in SPEND_STOPS:
                    # Refused while the call before it ran at its worst case; that call
                    # has settled since, so the answer is asked for afresh.
                    continue
            else:
                outcome = await self.call(
                    run, index, "answer", messages, speculative=False, text=text
                )
            delay = self._backoff(run, index, outcome, retries + 1)
            if delay is None or (text is not None and not text.restart()):
                return outcome
            retries += 1
            await self._sleep(delay)

    async def judge(self, run: RunState, index: int, question: str, answer: str) -> CallOutcome:
        """Tier `index`'s verdict on `answer`; never retried (an unjudged answer escalates).

        The judge sees the conversation it judges: the request's earlier turns and its
        system prompt, bounded by `cascade.judge_context_*` and fenced as untrusted.
        """
        config = self._config
        context = prompts.JudgeContext(
            system=run.query.system,
            history=run.query.route.history,
            turns=config.judge_context_turns,
            chars=config.judge_context_chars,
            system_chars=config.judge_system_chars,
        )
        messages = prompts.judge_messages(question, answer, context)
        return await self.call(run, index, "judge", messages, speculative=False)

    def tier_name(self, index: int) -> str:
        """The name of tier `index`."""
        return self._tiers[index].name

    def speculate(self, run: RunState, index: int | None, messages: list[Message]) -> Speculation:
        """The block within which tier `index`'s answer runs ahead (None: no call ahead)."""
        return Speculation(self, run, index, messages)

    async def call(
        self,
        run: RunState,
        index: int,
        role: HopRole,
        messages: list[Message],
        *,
        speculative: bool,
        text: AnswerText | None = None,
    ) -> CallOutcome:
        """One call to tier `index`, settled with its tier's circuit breaker.

        A streamed request hears of the call as it starts and ends (and of a judge's
        verdict); with `text` an answer call streams its deltas into it.
        """
        return await self._call(
            run, index, self._tiers[index], role, messages, speculative=speculative, text=text
        )

    async def probe(self, run: RunState, probe: TierConfig, messages: list[Message]) -> CallOutcome:
        """The probe's answer to `messages` (a model outside the tiers, priced as `probe`),
        within the request's limits and behind the probe's own breaker; never retried."""
        # A probe is outside the ladder: its reservation carries tier index -1.
        return await self._call(run, -1, probe, "probe", messages, speculative=False)

    async def _call(
        self,
        run: RunState,
        index: int,
        tier: TierConfig,
        role: HopRole,
        messages: list[Message],
        *,
        speculative: bool,
        text: AnswerText | None = None,
    ) -> CallOutcome:
        draft, stop, permit = self._prepare(run, tier, role, speculative=speculative)
        position = len(run.hops) - 1
        if permit is None:
            self._finished(run, position, draft)
            if stop is None:
                return CallOutcome(circuit_open=True)
            return CallOutcome(stop=stop)
        try:
            held = await self._reserve(run, index, draft, messages)
        except BaseException:
            permit.release()
            self._finished(run, position, draft)
            raise
        if not isinstance(held, Held):
            # The cost ceiling or the tenant's budget refused the call: nothing was sent.
            permit.release()
            self._finished(run, position, draft)
            return CallOutcome(stop=held)
        try:
            outcome = await self._execute(run, draft, messages, text)
        except BaseException:
            # Cancelled (or a bug): the call says nothing about the tier's health.
            permit.release()
            run.spend.settle(held, draft)
            self._finished(run, position, draft)
            raise
        run.spend.settle(held, draft)
        if outcome.completion is not None:
            permit.success()
        elif outcome.error is not None and outcome.error.retryable and outcome.stop is None:
            permit.failure()
        else:
            # Terminal errors are the request's fault, deadline cuts the caller's choice.
            permit.release()
        self._finished(run, position, draft)
        return outcome

    async def _reserve(
        self, run: RunState, index: int, draft: HopDraft, messages: list[Message]
    ) -> Held | Stop:
        """Reserve the call's worst case with the request's spend: its prompt's estimated
        input tokens (all written to the cache when the request caches) and its maximum
        output tokens, at its tier's prices."""
        judge = draft.role == "judge"
        max_tokens = self._max_tokens(run, draft, judge=judge)
        system = prompts.JUDGE_SYSTEM if judge else (run.query.system or None)
        params = None if judge else run.query.params
        body = message_body(
            model=draft.tier.model,
            messages=messages,
            max_tokens=max_tokens,
            system=system,
            tool=prompts.JUDGE_TOOL if judge else None,
            params=params,
        )
        input_tokens = prompt_tokens(body, messages, system)
        tier = draft.tier
        if not judge and _asks_caching(messages, run.query.params):
            worst = tier.cost_usd(0, max_tokens, cache_creation_tokens=input_tokens)
            worst = max(worst, tier.cost_usd(input_tokens, max_tokens))
        else:
            worst = tier.cost_usd(input_tokens, max_tokens)
        return await run.spend.reserve(draft, index, worst, input_tokens + max_tokens, max_tokens)

    def _finished(self, run: RunState, position: int, draft: HopDraft) -> None:
        """Tell a streamed request that a call ended (and what its judge decided)."""
        events = run.events
        if events is None:
            return
        events.emit(HopFinishedEvent(position, draft.freeze(self._clock())))
        if draft.role == "judge" and draft.verdict is not None:
            events.emit(
                VerdictEvent(
                    answer_tier=self._tiers[self._tiers.index(draft.tier) - 1].name,
                    judge_tier=draft.tier.name,
                    verdict=draft.verdict,
                    issues=draft.issues,
                )
            )

    def _backoff(self, run: RunState, index: int, outcome: CallOutcome, retry: int) -> float | None:
        """The wait before the `retry`-th retry of `outcome`, or None when it is not retried."""
        error = outcome.error
        if outcome.stop is not None or error is None:
            return None
        if not error.retryable or index < self._top:
            # A higher tier serves instead of a back-off; terminal errors never retry.
            return None
        if retry > self._config.max_retries_per_tier:
            return None
        tier = self._tiers[index].name
        delay = retry_delay(
            error, retry, self._config.retry_base_delay_s, self._config.retry_max_delay_s, self._rng
        )
        if delay >= run.deadline.remaining():
            # Waiting would outlast the request: fail now rather than at the deadline.
            self._telemetry.retry_abandoned(tier, error.kind, delay)
            logger.info(
                "cascade %s: %s retry in %.3fs would pass the deadline", run.request_id, tier, delay
            )
            return None
        self._telemetry.retry(tier, retry, error.kind, delay)
        return delay

    def _prepare(
        self, run: RunState, tier: TierConfig, role: HopRole, *, speculative: bool
    ) -> tuple[HopDraft, Stop | None, Permit | None]:
        """Reserve the call's hop (in start order), ask the tier's circuit breaker, and
        charge the call to the request's limits.

        The permit is None when no call may be made: `stop` then says which limit refused
        it, or is None when the breaker did (the hop is skipped as `circuit_open`, and
        nothing is charged to the attempt budget).
        """
        draft = HopDraft(
            tier=tier,
            role=role,
            attempt=run.next_attempt(tier.name, role),
            speculative=speculative,
            started=self._clock(),
        )
        run.hops.append(draft)
        if run.events is not None:
            run.events.emit(
                HopStartedEvent(
                    index=len(run.hops) - 1,
                    tier=tier.name,
                    model=tier.model,
                    role=role,
                    attempt=draft.attempt,
                    speculative=speculative,
                )
            )
        stop: Stop | None = None
        permit: Permit | None = None
        if run.deadline.expired():
            stop = "deadline"
        else:
            permit = self._breakers.acquire(tier.name)
            if permit is None:
                draft.outcome, draft.error_kind, draft.latency_s = "skipped", CIRCUIT_OPEN, 0.0
            elif not run.budget.take():
                permit.release()
                permit, stop = None, "budget"
        if stop is not None:
            draft.outcome, draft.error_kind, draft.latency_s = "skipped", stop, 0.0
        if role == "judge" and draft.outcome == "skipped":
            draft.verdict = "unavailable"
        return draft, stop, permit

    async def _execute(
        self, run: RunState, draft: HopDraft, messages: list[Message], text: AnswerText | None
    ) -> CallOutcome:
        """Make one provider call; never raises a ProviderError, only CancelledError."""
        remaining = run.deadline.remaining()
        per_call = self._config.per_call_timeout_s
        timeout_s = min(per_call, remaining)
        bound_by_deadline = remaining <= per_call
        judge = draft.role == "judge"
        system = prompts.JUDGE_SYSTEM if judge else (run.query.system or None)
        draft.started = self._clock()
        with self._telemetry.call_span(draft) as span:
            try:
                async with asyncio.timeout(timeout_s) as scope:
                    if text is not None and not judge:
                        completion = await self._streamed(
                            run, draft, messages, text, timeout_s=timeout_s, system=system
                        )
                    else:
                        completion = await self._provider.complete(
                            model=draft.tier.model,
                            messages=messages,
                            max_tokens=self._max_tokens(run, draft, judge=judge),
                            timeout_s=timeout_s,
                            system=system,
                            tool=prompts.JUDGE_TOOL if judge else None,
                            headers=run.query.headers,
                            params=None if judge else run.query.params,
                        )
            except TimeoutError:
                if not scope.expired():
                    raise
                return self._failed(
                    run, draft, ProviderTimeout("call timed out"), bound_by_deadline
                )
            except ProviderError as exc:
                return self._failed(run, draft, exc, bound_by_deadline)
            except asyncio.CancelledError:
                # A provider that has read the prompt bills it, answered or not: the hop is
                # billed its (estimated) input tokens, plus any output it streamed back.
                draft.outcome = "cancelled"
                body = message_body(
                    model=draft.tier.model,
                    messages=messages,
                    max_tokens=self._max_tokens(run, draft, judge=judge),
                    system=system,
                    tool=prompts.JUDGE_TOOL if judge else None,
                    params=None if judge else run.query.params,
                )
                draft.input_tokens = prompt_tokens(body, messages, system)
                raise
            self._telemetry.completed(span, messages, system, completion)
            return self._completed(draft, completion)

    async def _streamed(
        self,
        run: RunState,
        draft: HopDraft,
        messages: list[Message],
        text: AnswerText,
        *,
        timeout_s: float,
        system: str | None,
    ) -> Completion:
        """An answer call through the provider's stream, its deltas into `text`."""
        stream = self._provider.stream(
            model=draft.tier.model,
            messages=messages,
            max_tokens=self._max_tokens(run, draft, judge=False),
            timeout_s=timeout_s,
            system=system,
            headers=run.query.headers,
            params=run.query.params,
        )
        completion: Completion | None = None
        received: list[str] = []
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    received.append(item.text)
                    text.push(item.text)
                else:
                    completion = item
        except asyncio.CancelledError:
            # Cut off mid-stream: billed the output it returned so far (and, by `_execute`,
            # the prompt it read).
            draft.output_tokens = estimate_tokens("".join(received))
            raise
        finally:
            # Leaving early (cancelled, timed out) ends the call upstream at once.
            await stream.aclose()
        if completion is None:
            raise ProviderConnectionError("the stream ended without its message")
        return completion

    def _max_tokens(self, run: RunState, draft: HopDraft, *, judge: bool) -> int:
        """The call's output limit: the judge's, else the request's (or the default), cut to
        the tier's own limit."""
        if judge:
            return self._config.judge_max_output_tokens
        asked = run.query.max_output_tokens or self._config.max_output_tokens
        return min(asked, draft.tier.max_output_tokens)

    def _completed(self, draft: HopDraft, completion: Completion) -> CallOutcome:
        """Record an answered call on its hop; a judge's reply is parsed into its verdict."""
        draft.outcome = "ok"
        draft.model = completion.model
        draft.input_tokens = completion.input_tokens
        draft.output_tokens = completion.output_tokens
        draft.stop_reason = completion.stop_reason
        draft.cache_creation_input_tokens = completion.cache_creation_input_tokens
        draft.cache_read_input_tokens = completion.cache_read_input_tokens
        if completion.latency_s > 0:
            draft.latency_s = completion.latency_s
        else:
            draft.latency_s = self._clock() - draft.started
        if draft.role != "judge":
            return CallOutcome(completion=completion)
        verdict = prompts.parse_verdict(completion.tool_input)
        draft.verdict = (
            "unavailable" if verdict.passes is None else ("pass" if verdict.passes else "fail")
        )
        draft.issues = verdict.issues
        return CallOutcome(completion=completion, verdict=verdict)

    def _failed(
        self, run: RunState, draft: HopDraft, error: ProviderError, bound_by_deadline: bool
    ) -> CallOutcome:
        draft.outcome = "error"
        draft.latency_s = self._clock() - draft.started
        if draft.role == "judge":
            draft.verdict = "unavailable"
        if isinstance(error, ProviderTimeout) and bound_by_deadline:
            draft.error_kind = "deadline"
            return CallOutcome(error=error, stop="deadline")
        draft.error_kind = error.kind
        logger.warning(
            "cascade %s: %s %s call failed: %s",
            run.request_id,
            draft.tier.name,
            draft.role,
            error.kind,
        )
        return CallOutcome(error=error)


def _asks_caching(messages: list[Message], params: AnswerParams) -> bool:
    """Whether any block of the answer call carries cache_control (it may be cache-written)."""
    blocks = (*params.system, *params.tools, *(b for m in messages for b in m.blocks))
    return any("cache_control" in block for block in blocks)


class Speculation:
    """The answer call a request starts on the next tier ahead of need, from start to end.

    Entering the block starts the call (when there is one to make); `take` hands it to the
    cascade once it reaches that tier; leaving the block cancels it if it is still in
    flight. The cancellation says why: `CANCEL_NOT_NEEDED` when the block ends normally
    (the cascade settled on its end without it), `CANCEL_REQUEST_ENDED` when an exception
    ends it (the caller went away, or a bug). No call outlives the block, and one that failed
    unexpectedly is logged rather than lost.
    """

    def __init__(
        self, caller: TierCaller, run: RunState, index: int | None, messages: list[Message]
    ) -> None:
        self._caller = caller
        self._run = run
        self._index = index
        self._messages = messages
        self._task: asyncio.Task[CallOutcome] | None = None
        self._taken = False
        # A streamed request's speculative answer streams into a buffer, held until the
        # cascade takes it over (and sends it live if it is committed).
        self.text: AnswerText | None = None

    async def __aenter__(self) -> Speculation:
        # Nothing here suspends: the task first runs when the cascade next does, that is
        # once the primary call has taken its place in the hop order and its attempt.
        if self._index is not None:
            events = self._run.events
            if events is not None:
                tier = self._caller.tier_name(self._index)
                self.text = AnswerText(events, tier, live=False)
            self._task = asyncio.create_task(
                self._caller.call(
                    self._run,
                    self._index,
                    "answer",
                    self._messages,
                    speculative=True,
                    text=self.text,
                )
            )
        return self

    def take(self, index: int) -> asyncio.Task[CallOutcome] | None:
        """The call, once, when the cascade reaches its tier `index`; None otherwise."""
        if self._task is None or self._taken or index != self._index:
            return None
        self._taken = True
        return self._task

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            # The message tells the call's span why it was cancelled.
            task.cancel(msg=CANCEL_NOT_NEEDED if exc_type is None else CANCEL_REQUEST_ENDED)
            await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "cascade %s: a speculative call failed unexpectedly",
                self._run.request_id,
                exc_info=task.exception(),
            )
