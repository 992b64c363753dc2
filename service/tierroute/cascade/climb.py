"""Where one Cascade's climb up the tiers stands: which answers are judged, the answer at
hand, and how the climb ended. The engine (`tierroute.cascade.engine`) drives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from tierroute.cascade.agreement import Agreement
from tierroute.cascade.breaker import DegradeAction
from tierroute.cascade.types import CallOutcome, CascadeQuery, JudgeStatus, Stop
from tierroute.errors import ProviderError
from tierroute.providers import Block, Completion, Message, prompts
from tierroute.routing import Decision


@dataclass(frozen=True)
class Judging:
    """Which answers of one request are judged, and what an unjudged one is called.

    `start` covers the start tier's answer, `escalated` every answer after an escalation.
    An answer left unjudged by the sampler (or JUDGE_MODE_NEVER) is `sampled_out`; one left
    unjudged by the request's or the value policy's choice is `skipped`.
    """

    start: bool
    escalated: bool
    unjudged: JudgeStatus
    # Checked by agreement with a probe (and earlier answers) instead of by a judge.
    by_agreement: bool = False
    # An unfamiliar query's check (routing.on_unfamiliar = "check"): by agreement with the
    # probe when the answer states a final answer, else by a judge; on doubt the climb goes
    # to the reference tier (`Climb.escalate_to`), whose answer is not checked.
    check: bool = False

    def judges(self, index: int, start_index: int) -> bool:
        """Whether the answer of tier `index` is judged."""
        return self.start if index == start_index else self.escalated


# The value policy's judge plans (`tierroute.routing.plan.JudgePlan`) as judging decisions.
PLAN_JUDGING: dict[str, Judging] = {
    "none": Judging(False, False, "skipped"),
    "all": Judging(True, True, "skipped"),
    "start_only": Judging(True, False, "skipped"),
    "agree": Judging(True, True, "skipped", by_agreement=True),
    "agree_mid": Judging(True, False, "skipped", by_agreement=True),
}
# An unfamiliar query's checked start (`Decision.check_to`).
CHECK_JUDGING = Judging(True, False, "skipped", check=True)
# The request's agreement modes, as the value plan's agreement plans.
AGREEMENT_PLAN = {"agreement": "agree", "agreement_mid": "agree_mid"}
# The judge modes a request can fix, whatever the plan or the sampler would say.
FIXED_JUDGING: dict[str, Judging] = {
    "always": Judging(True, True, "sampled_out"),
    "never": Judging(False, False, "sampled_out"),
    "start_only": Judging(True, False, "skipped"),
    **{mode: PLAN_JUDGING[plan] for mode, plan in AGREEMENT_PLAN.items()},
}


@dataclass(frozen=True)
class Candidate:
    """An answer the request may return: the one chosen, or one held in reserve."""

    text: str
    tier_index: int
    status: JudgeStatus
    # The answer's tool_use blocks (with any text blocks around them), for a tool call.
    content: tuple[Block, ...] = ()
    stop_reason: str = ""

    @classmethod
    def of(
        cls, completion: Completion, index: int, status: JudgeStatus, text: str | None = None
    ) -> Candidate:
        """The candidate a completed answer call makes (`text` replaces its own)."""
        content = completion.content if completion.tool_calls else ()
        answer = completion.text if text is None else text
        return cls(answer, index, status, content, completion.stop_reason)


@dataclass(frozen=True)
class Stopped:
    """A request limit ended the climb; `held` is the answer at hand, if any."""

    stop: Stop
    held: Candidate | None


@dataclass(frozen=True)
class Refused:
    """Tier `index`'s breaker refused its answer call, and its policy does not skip it."""

    index: int
    action: DegradeAction
    held: Candidate | None


@dataclass(frozen=True)
class Interrupted:
    """Tier `index`'s committed answer broke off after its text was sent."""

    index: int
    outcome: CallOutcome


@dataclass(frozen=True)
class Exhausted:
    """The top tier, `index`, failed with `error`: no tier is left to climb to."""

    index: int
    error: ProviderError
    held: Candidate | None


# How the climb up the tiers ended. The result (or error) is made from it only once the
# call run ahead has been used or cancelled, so no exit path has to cancel it.
End: TypeAlias = Candidate | Stopped | Refused | Exhausted | Interrupted


@dataclass
class Climb:
    """Where one request's cascade stands: its fixed start, and the tier it is on now."""

    start: int
    decision: Decision | None
    judging: Judging
    question: str
    history: list[Message]
    # The question's turn, with any content blocks it carries.
    turn: Message
    # The question as asked: what a tier gets when there is no failed attempt to pass on.
    plain: list[Message]
    index: int
    messages: list[Message]
    self_routing: bool
    fallback: Candidate | None = None
    agreement: Agreement | None = None
    # The tier the first escalation goes to when it is not the next one (an unfamiliar
    # query's reference tier); later escalations go one tier up.
    escalate_to: int | None = None

    @classmethod
    def begin(
        cls, query: CascadeQuery, start: int, decision: Decision | None, judging: Judging
    ) -> Climb:
        question = query.route.text
        history = list(query.route.history)
        turn = query.question_turn
        plain = [*history, turn]
        self_routing = query.self_routing
        return cls(
            start=start,
            decision=decision,
            judging=judging,
            question=question,
            history=history,
            turn=turn,
            plain=plain,
            index=start,
            messages=(
                prompts.self_routing_messages(question, history, turn) if self_routing else plain
            ),
            self_routing=self_routing,
        )

    @property
    def next_index(self) -> int:
        """The tier an escalation from here goes to."""
        target = self.escalate_to
        return target if target is not None and target > self.index else self.index + 1

    def up(self, messages: list[Message] | None = None) -> None:
        """Move to the next tier (`next_index`), asking it `messages`.

        Without `messages` the next tier is asked what this one was, except that the
        self-routing prompt is left behind for the plain question.
        """
        if messages is not None:
            self.messages = messages
        elif self.self_routing:
            self.messages = self.plain
        self.self_routing = False
        self.index = self.next_index
