"""The events of a streamed cascade (`cascade_stream`), as small frozen dataclasses.

A stream yields, in order: `HopStarted` and `HopFinished` for every model call, `Verdict`
when a judge decides, `TextDelta` pieces of the answer, `Retract` when a draft is withdrawn
(only with `stream_drafts=True`), and last `Final` with the whole `CascadeResult`. The text
received after the last `Retract` joins to `Final.result.answer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from tierroute_client._results import CascadeResult, Hop, _enum_name
from tierroute_client.v1 import tierroute_pb2 as pb


@dataclass(frozen=True, slots=True)
class HopStarted:
    """A model call began; `index` is its place in the result's hops."""

    index: int
    tier: str
    model: str
    role: str
    attempt: int
    speculative: bool


@dataclass(frozen=True, slots=True)
class HopFinished:
    """A model call ended, with its tokens, cost and outcome."""

    index: int
    hop: Hop


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's verdict (`pass`, `fail` or `unavailable`) on one tier's answer."""

    answer_tier: str
    judge_tier: str
    verdict: str
    issues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Retract:
    """The text received since the last retract is withdrawn: `tier`'s draft is not kept."""

    tier: str
    reason: str


@dataclass(frozen=True, slots=True)
class Final:
    """The last event: the whole result, as `cascade` returns it."""

    result: CascadeResult


CascadeEvent: TypeAlias = HopStarted | HopFinished | Verdict | TextDelta | Retract | Final


def _hop_started(event: pb.CascadeEvent) -> HopStarted:
    s = event.hop_started
    return HopStarted(
        index=s.index,
        tier=s.tier,
        model=s.model,
        role=_enum_name(pb.HopRole, s.role, "HOP_ROLE_"),
        attempt=s.attempt,
        speculative=s.speculative,
    )


def _verdict(event: pb.CascadeEvent) -> Verdict:
    v = event.verdict
    return Verdict(
        answer_tier=v.answer_tier,
        judge_tier=v.judge_tier,
        verdict=_enum_name(pb.JudgeVerdict, v.verdict, "JUDGE_VERDICT_"),
        issues=tuple(v.issues),
    )


# One converter per kind of event, by the name of its field in the `event` oneof.
_CONVERTERS: dict[str, Callable[[pb.CascadeEvent], CascadeEvent]] = {
    "text": lambda e: TextDelta(e.text),
    "hop_started": _hop_started,
    "hop_finished": lambda e: HopFinished(e.hop_finished.index, Hop.from_pb(e.hop_finished.hop)),
    "verdict": _verdict,
    "retract": lambda e: Retract(e.retract.tier, e.retract.reason),
    "response": lambda e: Final(CascadeResult.from_pb(e.response)),
}


def event_from_pb(event: pb.CascadeEvent) -> CascadeEvent | None:
    """Convert one streamed event; None for a kind this client predates (skip it)."""
    convert = _CONVERTERS.get(str(event.WhichOneof("event")))
    return convert(event) if convert is not None else None
