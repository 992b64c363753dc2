"""Request ids as idempotency keys through the real server: a repeat gets the recorded
result without a model call, ALREADY_EXISTS while the first runs, a failed call frees it."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from tests.helpers import running_server
from tests.tenancy.serving import CHEAP, EASY, MID, TOP, cheap_call, tenant_settings
from tierroute.errors import TerminalProviderError
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.v1 import tierroute_pb2 as pb


async def test_a_retried_request_id_is_answered_from_its_record(tmp_path) -> None:
    """The same Cascade sent twice with one request id calls the model once; both answers
    are the same response."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY, provider=provider) as s:
        first = await s.stub.Cascade(cheap_call(request_id="order-7"))
        again = await s.stub.Cascade(cheap_call(request_id="order-7"))
    assert len(provider.calls) == 1
    # Message equality: the route's thresholds are a map, whose wire order protobuf does not
    # fix, so the bytes of one message can differ from one serialization to the next.
    assert again == first
    assert again.request_id == "order-7"


async def test_a_stream_repeating_a_request_id_replays_the_answer(tmp_path) -> None:
    """CascadeStream with a finished call's request id streams its text and response."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY, provider=provider) as s:
        first = await s.stub.Cascade(cheap_call(request_id="order-8"))
        events = [e async for e in s.stub.CascadeStream(cheap_call(request_id="order-8"))]
    assert [e.WhichOneof("event") for e in events] == ["text", "response"]
    assert events[0].text == "Paris"
    assert events[1].response == first
    assert len(provider.calls) == 1


async def test_a_request_id_still_running_is_already_exists(tmp_path) -> None:
    """While the first call waits on its model, a repeat is ALREADY_EXISTS; the first ends OK."""
    gate = asyncio.Event()
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris", gate=gate)]})
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY, provider=provider) as s:
        first = asyncio.ensure_future(s.stub.Cascade(cheap_call(request_id="order-9")))
        await provider.wait_for_calls(1)
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(cheap_call(request_id="order-9"))
        gate.set()
        answered = await first
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert answered.answer == "Paris"
    assert len(provider.calls) == 1


async def test_a_request_id_reused_for_another_request_is_invalid(tmp_path) -> None:
    """A request id names one request: another query under it is INVALID_ARGUMENT."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("Paris")]})
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(cheap_call(request_id="order-10"))
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(cheap_call(request_id="order-10", query="And of Spain?"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already used for a different request" in (err.value.details() or "")


async def test_a_failed_call_leaves_its_request_id_free_to_retry(tmp_path) -> None:
    """Every tier failing ends the first call UNAVAILABLE-like; its retry runs afresh."""
    refused = TerminalProviderError("bad request", status_code=400)
    provider = ScriptedProvider(
        answers={
            CHEAP: [Reply.fail(refused), Reply.answer("Paris")],
            MID: [Reply.fail(refused)],
            TOP: [Reply.fail(refused)],
        }
    )
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY, provider=provider) as s:
        with pytest.raises(aio.AioRpcError):
            await s.stub.Cascade(cheap_call(request_id="order-11"))
        retried = await s.stub.Cascade(cheap_call(request_id="order-11"))
    assert retried.answer == "Paris"


async def test_a_repeated_route_is_simply_answered_again(tmp_path) -> None:
    """Route calls no model: the same request id is routed twice, both OK."""
    async with running_server(tenant_settings(tmp_path, ""), scorer=EASY) as s:
        request = pb.RouteRequest(query="What is 2+2?", request_id="route-1", tenant_id="acme")
        first = await s.stub.Route(request)
        second = await s.stub.Route(request)
    assert first.tier.name == second.tier.name == "cheap"
    assert second.request_id == "route-1"
