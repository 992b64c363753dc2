"""The Cascade's agreement check: a probe's answer (and earlier tiers') instead of a judge.

In the agreement modes (`judge_mode` "agreement" and "agreement_mid", or a value plan's
"agree" and "agree_mid") the probe, a configured model outside the tiers, answers the
question in parallel with the start tier. An answer is accepted when its final answer
(`tierroute.providers.final_answer`: only an explicitly stated one counts) equals the
probe's or that of an answer before it; one that states none agrees with nothing.
`Agreement` owns the probe's call from start to end, as `Speculation` owns the call run
ahead: leaving the block cancels it if it is still in flight (billed what it read).
docs/cascade.md, "Agreement".
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from tierroute.cascade.caller import TierCaller
from tierroute.cascade.run import RunState
from tierroute.cascade.types import CallOutcome
from tierroute.observability.names import CANCEL_NOT_NEEDED, CANCEL_REQUEST_ENDED
from tierroute.providers import Message, final_answer
from tierroute.routing import Reason, ReasonNote
from tierroute.settings import TierConfig


class Agreement:
    """One request's agreement check: the probe's call and the final answers seen so far."""

    def __init__(
        self,
        caller: TierCaller,
        run: RunState,
        probe: TierConfig | None,
        messages: list[Message],
    ) -> None:
        self._caller = caller
        self._run = run
        self._probe = probe
        self._messages = messages
        self._task: asyncio.Task[CallOutcome] | None = None
        self._probe_read = False
        # Final answers an answer may agree with: the probe's, then each checked answer's.
        self._seen: list[tuple[str, str]] = []

    async def __aenter__(self) -> Agreement:
        if self._probe is not None:
            self._task = asyncio.create_task(
                self._caller.probe(self._run, self._probe, self._messages)
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None or task.done():
            return
        task.cancel(msg=CANCEL_NOT_NEEDED if exc_type is None else CANCEL_REQUEST_ENDED)
        await asyncio.wait([task])

    async def check(self, answer: str, tier_name: str) -> ReasonNote | None:
        """None when `answer` agrees with the probe's or an earlier answer's final answer;
        else why not (the answer is then remembered for the answers after it)."""
        await self._read_probe()
        mine = final_answer(answer)
        if mine and any(mine == theirs for _, theirs in self._seen):
            return None
        others = " or ".join(name for name, _ in self._seen) or "no other answer"
        if not mine:
            detail = f"the {tier_name} answer states no final answer"
        elif not self._seen:
            detail = f"the {tier_name} answer has no other answer to agree with"
        else:
            detail = f"the {tier_name} final answer differs from {others}"
        self._seen.append((tier_name, mine))
        return ReasonNote(Reason.ANSWERS_DISAGREE, detail)

    async def _read_probe(self) -> None:
        """Wait for the probe's answer (once); a probe that could not answer is degraded."""
        if self._probe_read:
            return
        self._probe_read = True
        name = self._probe.name if self._probe is not None else "none"
        outcome = await self._task if self._task is not None else None
        completion = outcome.completion if outcome is not None else None
        if completion is None or completion.tool_calls:
            reason = f"probe_unavailable:{name}"
            if reason not in self._run.degraded:
                self._run.degraded.append(reason)
            return
        self._seen.append((name, final_answer(completion.text)))
