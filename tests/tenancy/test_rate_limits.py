"""Tenants' requests_per_minute and tokens_per_minute through the real server."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from tests.helpers import running_server
from tests.tenancy.serving import CHEAP, EASY, SPENT, cheap_call, tenant_settings
from tierroute.providers.scripted import ScriptedProvider
from tierroute.v1 import tierroute_pb2 as pb


async def test_requests_past_the_minutes_limit_are_refused(tmp_path) -> None:
    """With 2 requests per minute, a Route and a Cascade pass and the third call is
    RESOURCE_EXHAUSTED naming the tenant and the limit; other tenants are not held."""
    settings = tenant_settings(tmp_path, "[tenants.acme]\nrequests_per_minute = 2\n")
    provider = ScriptedProvider(answers={CHEAP: [SPENT]})
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        await s.stub.Route(pb.RouteRequest(query="q", tenant_id="acme"))
        await s.stub.Cascade(cheap_call())
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="q", tenant_id="acme"))
        other = await s.stub.Route(pb.RouteRequest(query="q", tenant_id="globex"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'acme' is at its rate limit (2 requests of 2 per minute)" in (
        err.value.details() or ""
    )
    assert other.tier.name == "cheap"


async def test_model_tokens_past_the_minutes_limit_refuse_cascades_not_routes(tmp_path) -> None:
    """A Cascade's 901 tokens reach a 900-token minute: the next Cascade is refused, while a
    Route, which calls no model, still passes."""
    settings = tenant_settings(tmp_path, "[tenants.acme]\ntokens_per_minute = 900\n")
    provider = ScriptedProvider(answers={CHEAP: [SPENT]})
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(cheap_call())
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(cheap_call())
        routed = await s.stub.Route(pb.RouteRequest(query="q", tenant_id="acme"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tokens of 900 per minute" in (err.value.details() or "")
    assert routed.tier.name == "cheap"


async def test_the_tenant_header_names_the_tenant_when_authentication_is_off(tmp_path) -> None:
    """Without a tenant_id, the x-tierroute-tenant metadata names the tenant its limits hold."""
    settings = tenant_settings(tmp_path, "[tenants.acme]\nrequests_per_minute = 1\n")
    header = (("x-tierroute-tenant", "acme"),)
    async with running_server(settings, scorer=EASY) as s:
        await s.stub.Route(pb.RouteRequest(query="q"), metadata=header)
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="q"), metadata=header)
        anonymous = await s.stub.Route(pb.RouteRequest(query="q"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert anonymous.tier.name == "cheap"
