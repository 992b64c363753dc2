"""Tenants' budgets through the real server: spend reserved at each call's worst case and
settled with its real usage, reject and cheapest modes, streamed calls counted too."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from tests.helpers import running_server
from tests.tenancy.serving import CHEAP, COST, EASY, MID, SPENT, cheap_call, tenant_settings
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.v1 import tierroute_pb2 as pb

REJECT = """
[tenants.acme]
budget_usd = 0.01
budget_window = "1h"
"""
CHEAPEST = """
[tenants.acme]
budget_usd = 0.006
budget_window = "1d"
on_budget_exhausted = "cheapest"
"""


async def test_a_spent_budget_is_refused_naming_tenant_spend_and_when_it_frees(tmp_path) -> None:
    """Two calls fit the $0.01 budget; the third is RESOURCE_EXHAUSTED and says why."""
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT]})
    async with running_server(
        tenant_settings(tmp_path, REJECT), scorer=EASY, provider=provider
    ) as s:
        for _ in range(2):
            await s.stub.Cascade(cheap_call())
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(cheap_call())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details() or ""
    assert "tenant 'acme'" in details
    assert "of its $0.01 budget over the last 1h" in details
    assert "frees at" in details
    assert len(provider.calls) == 2


async def test_other_tenants_keep_their_own_budget(tmp_path) -> None:
    """A tenant without limits is not held by acme's spent budget."""
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT, SPENT]})
    async with running_server(
        tenant_settings(tmp_path, REJECT), scorer=EASY, provider=provider
    ) as s:
        for _ in range(2):
            await s.stub.Cascade(cheap_call())
        response = await s.stub.Cascade(cheap_call("globex"))
    assert response.answer == "Paris"


async def test_streamed_calls_spend_the_budget_too(tmp_path) -> None:
    """CascadeStream reserves and settles like Cascade: after two, the third is refused."""
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT]})
    async with running_server(
        tenant_settings(tmp_path, REJECT), scorer=EASY, provider=provider
    ) as s:
        for _ in range(2):
            events = [e async for e in s.stub.CascadeStream(cheap_call())]
            assert events[-1].response.total_cost_usd == pytest.approx(COST)
        with pytest.raises(aio.AioRpcError) as err:
            async for _ in s.stub.CascadeStream(cheap_call()):
                pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_over_budget_in_cheapest_mode_the_cheap_tier_answers_unjudged(tmp_path) -> None:
    """Once the budget is spent, a call routed to mid and judged is answered by the cheap
    tier, unjudged, and the response says so."""
    provider = ScriptedProvider(answers={CHEAP: [SPENT, SPENT, SPENT]})
    async with running_server(
        tenant_settings(tmp_path, CHEAPEST), scorer=EASY, provider=provider
    ) as s:
        # Cheap calls are never refused in cheapest mode: the second takes spend past $0.006.
        await s.stub.Cascade(cheap_call())
        await s.stub.Cascade(cheap_call())
        response = await s.stub.Cascade(
            cheap_call(start_tier="mid", judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
    assert response.tier.name == "cheap"
    assert response.tenant_over_budget
    assert response.judge_status == pb.JUDGE_STATUS_SKIPPED
    assert [h.role for h in response.hops] == [pb.HOP_ROLE_ANSWER]
    assert pb.REASON_CODE_TENANT_BUDGET in [r.code for r in response.route.reasons]
    assert provider.calls_to(MID) == []


async def test_in_cheapest_mode_a_refused_tier_falls_back_to_the_cheap_one(tmp_path) -> None:
    """A call whose mid answer would pass the budget is answered by the cheap tier instead."""
    provider = ScriptedProvider(answers={CHEAP: [SPENT, Reply.answer("cheap")]})
    async with running_server(
        tenant_settings(tmp_path, CHEAPEST), scorer=EASY, provider=provider
    ) as s:
        await s.stub.Cascade(cheap_call())
        # $0.0045 spent of $0.006: a mid call's worst case ($0.015) does not fit.
        response = await s.stub.Cascade(cheap_call(start_tier="mid"))
    assert (response.tier.name, response.answer) == ("cheap", "cheap")
    assert response.tenant_over_budget
    skipped = response.hops[0]
    assert (skipped.tier, skipped.outcome, skipped.error_kind) == (
        "mid",
        pb.HOP_OUTCOME_SKIPPED,
        "tenant_budget",
    )
    assert "acme" in skipped.skip_reason
