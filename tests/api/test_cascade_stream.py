"""CascadeStream through the real server and a real channel: events per hop, text deltas
past the commit point, drafts and retracts, speculation into a buffer, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from grpc import aio

from tests.helpers import Running, make_settings, running_server
from tierroute.errors import ProviderOverloaded
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
EASY = StaticScorer((0.95, 0.03, 0.02))
QUESTION = "What is the capital of France?"


@pytest.fixture
def provider() -> ScriptedProvider:
    """An empty script; each test queues the replies it needs."""
    return ScriptedProvider()


@pytest.fixture
async def served(provider: ScriptedProvider) -> AsyncIterator[Running]:
    """The real server on port 0 over the scripted provider, routing every query cheap."""
    async with running_server(make_settings(), scorer=EASY, provider=provider) as running:
        yield running


async def collect(served: Running, request: pb.CascadeRequest) -> list[pb.CascadeEvent]:
    return [event async for event in served.stub.CascadeStream(request)]


async def drain(call: AsyncIterator[pb.CascadeEvent], into: list[pb.CascadeEvent]) -> None:
    """Read every event of `call` into `into` (kept when the call fails part-way)."""
    async for event in call:
        into.append(event)


def kinds(events: Sequence[pb.CascadeEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def final_text(events: Sequence[pb.CascadeEvent]) -> str:
    """The text sent after the last retract: what the caller keeps."""
    kept: list[str] = []
    for event in events:
        if event.HasField("retract"):
            kept.clear()
        elif event.WhichOneof("event") == "text":
            kept.append(event.text)
    return "".join(kept)


async def test_an_unjudged_answer_streams_as_it_is_written(
    served: Running, provider: ScriptedProvider
) -> None:
    """Deltas of a committed answer arrive one by one and join to the final answer."""
    provider.script(
        CHEAP, Reply.answer("Paris is the capital.", deltas=("Paris ", "is ", "the capital."))
    )
    events = await collect(
        served, pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_NEVER)
    )
    assert kinds(events) == ["hop_started", "text", "text", "text", "hop_finished", "response"]
    assert [e.text for e in events if e.WhichOneof("event") == "text"] == [
        "Paris ",
        "is ",
        "the capital.",
    ]
    response = events[-1].response
    assert final_text(events) == response.answer == "Paris is the capital."
    assert events[-2].hop_finished.hop == response.hops[0]
    assert provider.calls[0].streamed


async def test_a_judged_answer_is_sent_only_once_its_judge_passes(
    served: Running, provider: ScriptedProvider
) -> None:
    """No text flows before the verdict; after a pass the whole answer follows at once."""
    provider.script(CHEAP, Reply.answer("Paris."))
    provider.script(MID, Reply.verdict(True), role="judge")
    events = await collect(
        served, pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert kinds(events) == [
        "hop_started",
        "hop_finished",
        "hop_started",
        "hop_finished",
        "verdict",
        "text",
        "response",
    ]
    verdict = events[4].verdict
    assert (verdict.answer_tier, verdict.judge_tier, verdict.verdict) == (
        "cheap",
        "mid",
        pb.JUDGE_VERDICT_PASS,
    )
    assert final_text(events) == events[-1].response.answer == "Paris."
    assert [h.index for h in (events[0].hop_started, events[2].hop_started)] == [0, 1]


async def test_an_escalation_streams_only_the_answer_kept(
    served: Running, provider: ScriptedProvider
) -> None:
    """Without drafts a failed answer never reaches the caller, and no retract is sent."""
    provider.script(CHEAP, Reply.answer("Lyon."))
    provider.script(MID, Reply.verdict(False, ["wrong city"]), role="judge")
    provider.script(MID, Reply.answer("Paris."))
    provider.script(TOP, Reply.verdict(True), role="judge")
    events = await collect(
        served, pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert "retract" not in kinds(events)
    assert [e.text for e in events if e.WhichOneof("event") == "text"] == ["Paris."]
    assert events[-1].response.answer == "Paris."
    assert events[-1].response.escalated


async def test_drafts_stream_first_and_a_failed_one_is_retracted(
    served: Running, provider: ScriptedProvider
) -> None:
    """With stream_drafts the failed draft's text comes first, then a retract, then the answer."""
    provider.script(CHEAP, Reply.answer("Lyon, I think."))
    provider.script(MID, Reply.verdict(False, ["wrong city"]), role="judge")
    provider.script(MID, Reply.answer("Paris."))
    provider.script(TOP, Reply.verdict(True), role="judge")
    events = await collect(
        served,
        pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS, stream_drafts=True),
    )
    order = kinds(events)
    first_text, retract = order.index("text"), order.index("retract")
    assert first_text < order.index("verdict") < retract
    assert "".join(e.text for e in events[:retract] if e.WhichOneof("event") == "text") == (
        "Lyon, I think."
    )
    assert (events[retract].retract.tier, events[retract].retract.reason) == (
        "cheap",
        "judge_failed",
    )
    assert order.count("retract") == 1
    assert final_text(events) == events[-1].response.answer == "Paris."


async def test_a_passed_draft_is_not_sent_twice(
    served: Running, provider: ScriptedProvider
) -> None:
    """A draft that passes its judge is the answer: its text is sent once, not retracted."""
    provider.script(CHEAP, Reply.answer("Paris."))
    provider.script(MID, Reply.verdict(True), role="judge")
    events = await collect(
        served,
        pb.CascadeRequest(query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS, stream_drafts=True),
    )
    assert "retract" not in kinds(events)
    assert "".join(e.text for e in events if e.WhichOneof("event") == "text") == "Paris."


async def test_the_speculative_tier_streams_into_a_buffer_while_the_judge_runs(
    served: Running, provider: ScriptedProvider
) -> None:
    """The next tier's text is held during the judge call and arrives right after its fail."""
    judge_gate = asyncio.Event()
    provider.script(CHEAP, Reply.answer("Lyon."))
    provider.script(MID, Reply.verdict(False, ["wrong"], gate=judge_gate), role="judge")
    provider.script(MID, Reply.answer("Paris, on the Seine."))
    stream = served.stub.CascadeStream(
        pb.CascadeRequest(
            query=QUESTION,
            judge_mode=pb.JUDGE_MODE_START_ONLY,
            speculation=pb.SPECULATION_MODE_ON,
        )
    )
    events: list[pb.CascadeEvent] = []
    async for event in stream:
        events.append(event)
        finished = event.hop_finished
        if event.HasField("hop_finished") and finished.hop.speculative:
            # The speculative answer is complete while the judge is still held.
            assert finished.hop.outcome == pb.HOP_OUTCOME_OK
            judge_gate.set()
    order = kinds(events)
    assert "text" not in order[: order.index("verdict")]
    texts = [e.text for e in events if e.WhichOneof("event") == "text"]
    assert texts == ["Paris, on the Seine."]
    response = events[-1].response
    assert response.answer == "Paris, on the Seine."
    assert [h.speculative for h in response.hops if h.role == pb.HOP_ROLE_ANSWER] == [False, True]


async def test_cancelling_the_stream_cancels_every_call_in_flight(
    served: Running, provider: ScriptedProvider
) -> None:
    """A caller that cancels mid-answer ends the streaming call and the speculative one."""
    hold = asyncio.Event()
    provider.script(CHEAP, Reply.answer("Paris is lovely", mid_gate=hold))
    provider.script(MID, Reply.answer("Paris.", gate=hold))
    call = served.stub.CascadeStream(
        pb.CascadeRequest(
            query=QUESTION,
            judge_mode=pb.JUDGE_MODE_NEVER,
            speculation=pb.SPECULATION_MODE_ON,
        )
    )
    async for event in call:
        if event.WhichOneof("event") == "text":
            break
    await provider.wait_for_calls(2)
    call.cancel()
    await provider.wait_settled()
    assert [(c.model, c.outcome) for c in provider.calls] == [
        (CHEAP, "cancelled"),
        (MID, "cancelled"),
    ]


async def test_a_committed_answer_that_breaks_after_its_text_fails_the_stream(
    served: Running, provider: ScriptedProvider
) -> None:
    """Without drafts, text already out is never replaced: the stream ends UNAVAILABLE."""
    provider.script(
        TOP, Reply.answer("Paris is", mid_error=ProviderOverloaded("529", status_code=529))
    )
    events: list[pb.CascadeEvent] = []
    call = served.stub.CascadeStream(pb.CascadeRequest(query=QUESTION, start_tier="expensive"))
    with pytest.raises(aio.AioRpcError) as err:
        await drain(call, events)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after its text began" in (err.value.details() or "")
    assert [e.text for e in events if e.WhichOneof("event") == "text"] == ["Paris "]
    assert len(provider.calls) == 1


async def test_with_drafts_a_broken_stream_is_retracted_and_retried(
    served: Running, provider: ScriptedProvider
) -> None:
    """With drafts the broken text is retracted and the top tier's retry answers."""
    provider.script(
        TOP,
        Reply.answer("Paris is", mid_error=ProviderOverloaded("529", status_code=529)),
        Reply.answer("Paris."),
    )
    events = await collect(
        served, pb.CascadeRequest(query=QUESTION, start_tier="expensive", stream_drafts=True)
    )
    assert kinds(events).count("retract") == 1
    assert final_text(events) == events[-1].response.answer == "Paris."
    assert [h.outcome for h in events[-1].response.hops] == [
        pb.HOP_OUTCOME_ERROR,
        pb.HOP_OUTCOME_OK,
    ]


async def test_a_tool_call_streams_its_text_and_ends_with_its_blocks(
    served: Running, provider: ScriptedProvider
) -> None:
    """A held answer that turns out to call a tool is sent, unjudged, with its tool_use."""
    provider.script(CHEAP, Reply.tool_call("lookup", {"q": "Paris"}, "Looking it up."))
    events = await collect(
        served,
        pb.CascadeRequest(
            query=QUESTION, judge_mode=pb.JUDGE_MODE_ALWAYS, tools=[pb.Tool(name="lookup")]
        ),
    )
    response = events[-1].response
    assert final_text(events) == "Looking it up."
    assert response.judge_status == pb.JUDGE_STATUS_TOOL_USE
    assert response.content[-1].tool_use.name == "lookup"


async def test_bad_input_ends_the_stream_invalid_argument(served: Running) -> None:
    """A bad request gets INVALID_ARGUMENT naming the limit, before any event."""
    with pytest.raises(aio.AioRpcError) as err:
        await collect(served, pb.CascadeRequest(query="q", temperature=3.0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in (err.value.details() or "")


async def test_drafts_are_refused_on_the_unary_cascade(served: Running) -> None:
    """stream_drafts means nothing to a unary call: INVALID_ARGUMENT says where it belongs."""
    with pytest.raises(aio.AioRpcError) as err:
        await served.stub.Cascade(pb.CascadeRequest(query="q", stream_drafts=True))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CascadeStream" in (err.value.details() or "")


async def test_agreement_streams_only_the_answer_that_agreed(
    served: Running, provider: ScriptedProvider
) -> None:
    """Under rule A the cheap answer is held until checked: a disagreeing one is never sent,
    and mid's answer streams once it agrees with the probe."""
    provider.script(CHEAP, Reply.answer("The answer is (A)."))
    provider.script("claude-3-haiku-20240307", Reply.answer("The answer is (B)."))
    provider.script(MID, Reply.answer("The answer is (B)."))
    events = await collect(
        served,
        pb.CascadeRequest(
            query=QUESTION,
            judge_mode=pb.JUDGE_MODE_AGREEMENT,
            speculation=pb.SPECULATION_MODE_OFF,
        ),
    )
    assert "retract" not in kinds(events)
    assert final_text(events) == "The answer is (B)."
    assert events[-1].response.judge_status == pb.JUDGE_STATUS_AGREED
    started = [e.hop_started.role for e in events if e.WhichOneof("event") == "hop_started"]
    assert pb.HOP_ROLE_PROBE in started
