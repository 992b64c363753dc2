"""A streamed Cascade's events, and the commit point that decides which text may flow.

`EventStream` is the queue the engine and the tier caller write to and the transport
reads: hop started and finished, the judge's verdicts, text deltas, retracts and, last,
the result. `AnswerText` is one answer call's text as it streams. It is either live (each
delta goes out as it arrives) or held (kept until the call is taken over live, or the
answer is final and `EventStream.finish` sends it).

The commit point: without `stream_drafts` an answer's text is live only when no later
step can withdraw it (it will not be judged, or it is the tier escalated to and unjudged);
everything else is held, so a caller never gets text it must discard. With
`stream_drafts` every answer is live and `withdraw` sends a `RetractEvent` for a draft that
is not the answer. Either way the text sent after the last retract joins to the result's
answer: `finish` sends whatever part of it is not out yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeAlias

from tierroute.cascade.types import CascadeResult, Hop, HopRole, VerdictValue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HopStartedEvent:
    """A provider call began (or was refused at once: a finished event follows)."""

    index: int
    tier: str
    model: str
    role: HopRole
    attempt: int
    speculative: bool


@dataclass(frozen=True)
class HopFinishedEvent:
    """A provider call ended; `hop` is as the result's hops will hold it."""

    index: int
    hop: Hop


@dataclass(frozen=True)
class VerdictEvent:
    """A judge's decision on one tier's answer."""

    answer_tier: str
    judge_tier: str
    verdict: VerdictValue
    issues: tuple[str, ...]


@dataclass(frozen=True)
class TextEvent:
    """A piece of the answer's text; `tier` names the tier that wrote it."""

    text: str
    tier: str = ""


@dataclass(frozen=True)
class RetractEvent:
    """The text sent since the last retract is withdrawn: `tier`'s draft is not the answer."""

    tier: str
    reason: str


@dataclass(frozen=True)
class ResultEvent:
    """The last event: the whole result."""

    result: CascadeResult


CascadeEvent: TypeAlias = (
    HopStartedEvent | HopFinishedEvent | VerdictEvent | TextEvent | RetractEvent | ResultEvent
)


class EventStream:
    """The events of one streamed Cascade, in order; read them with `until_closed`.

    Writers never wait: the queue is unbounded, and what it can hold is bounded by the
    request (its hops and its answers' text).
    """

    def __init__(self, *, drafts: bool = False, clock: Callable[[], float] | None = None) -> None:
        self.drafts = drafts
        self._queue: asyncio.Queue[CascadeEvent | None] = asyncio.Queue()
        # The text the caller holds since the last retract.
        self._delivered: list[str] = []
        self.retracts = 0
        self._clock = clock
        # When the first piece of text went out, on `clock` (time to first token).
        self.first_text_at: float | None = None

    def emit(self, event: CascadeEvent) -> None:
        """Queue one event."""
        self._queue.put_nowait(event)

    def text(self, piece: str, tier: str = "") -> None:
        """Send a piece of answer text written by `tier`."""
        if piece:
            if self.first_text_at is None and self._clock is not None:
                self.first_text_at = self._clock()
            self._delivered.append(piece)
            self.emit(TextEvent(piece, tier))

    @property
    def delivered(self) -> str:
        """The text sent since the last retract."""
        return "".join(self._delivered)

    def withdraw(self, tier: str, reason: str) -> None:
        """Retract the text sent so far, if any (a held answer never sent any)."""
        if not self._delivered:
            return
        self._delivered.clear()
        self.retracts += 1
        self.emit(RetractEvent(tier, reason))

    def finish(self, result: CascadeResult) -> None:
        """Send what the caller lacks of the answer's text, then the result."""
        delivered = self.delivered
        answer = result.answer
        if not answer.startswith(delivered):
            if not self.drafts:
                # Committed text is never replaced; reaching here is a bug, shown as one.
                logger.error(
                    "cascade %s: committed text differs from the answer", result.request_id
                )
            self.withdraw(result.tier.name, "replaced")
            delivered = ""
        self.text(answer[len(delivered) :], result.tier.name)
        self.emit(ResultEvent(result))

    def close(self) -> None:
        """No more events: the reader's `until` ends after what is queued."""
        self._queue.put_nowait(None)

    async def until_closed(self) -> AsyncIterator[CascadeEvent]:
        """The events as they come, until `close`."""
        while (event := await self._queue.get()) is not None:
            yield event


class AnswerText:
    """One answer call's text as it streams: sent live, or held until taken live.

    `sent` says whether any of it reached the caller, which decides what the cascade may
    still do with the call: a committed answer whose stream breaks after text went out
    cannot be replaced silently.
    """

    def __init__(self, events: EventStream, tier: str, *, live: bool) -> None:
        self._events = events
        self._tier = tier
        self._live = live
        self._chunks: list[str] = []
        self.sent = False

    @property
    def live(self) -> bool:
        """Whether deltas go out as they arrive."""
        return self._live

    def push(self, piece: str) -> None:
        """A delta from the provider."""
        self._chunks.append(piece)
        if self._live and piece:
            self._events.text(piece, self._tier)
            self.sent = True

    def go_live(self) -> None:
        """Send what was held and every delta from now on (a call taken over, committed)."""
        if self._live:
            return
        self._live = True
        held = "".join(self._chunks)
        if held:
            self._events.text(held, self._tier)
            self.sent = True

    def restart(self) -> bool:
        """Forget the text for a retry of the call; False when it cannot be taken back.

        Text not yet sent is simply dropped. Sent text can be taken back only with drafts
        (a retract); a committed answer whose text went out cannot be retried.
        """
        if self.sent:
            if not self._events.drafts:
                return False
            self._events.withdraw(self._tier, "provider_error")
            self.sent = False
        self._chunks.clear()
        return True
