"""Two replicas (two real servers in this process) on the real PostgreSQL share tenants'
state: one budget spent from both at once, and one session's floor."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tests.tenancy.serving import CHEAP, COST, EASY, MID, SPENT, cheap_call
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.tenancy import StateStore
from tierroute.v1 import tierroute_pb2 as pb

BUDGET = 0.05
CALLS_PER_REPLICA = 12


def _replica_settings(pg_url: str, folder, tenants: str = ""):
    config = folder / "replicas.toml"
    config.write_text(tenants)
    return make_settings({"TIERROUTE_CONFIG": str(config), "TIERROUTE_TENANCY_STATE_URL": pg_url})


async def test_two_replicas_spending_one_budget_at_once_stay_within_it(pg_url, tmp_path) -> None:
    """24 calls at once through two replicas against a $0.05 budget: the answered ones
    spend at most the budget (each call is reserved at its worst case before it is made,
    and here costs less than it; estimate error of the calls in flight is all a budget can
    be passed by), the rest are RESOURCE_EXHAUSTED, and every reservation is settled."""
    settings = _replica_settings(
        pg_url, tmp_path, f'[tenants.acme]\nbudget_usd = {BUDGET}\nbudget_window = "1h"\n'
    )
    providers = [ScriptedProvider(answers={CHEAP: [SPENT] * 24}) for _ in range(2)]
    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(running_server(settings, scorer=EASY, provider=p))
            for p in providers
        ]
        outcomes = await asyncio.gather(
            *(
                replica.stub.Cascade(cheap_call())
                for replica in replicas
                for _ in range(CALLS_PER_REPLICA)
            ),
            return_exceptions=True,
        )
    answered = [o for o in outcomes if isinstance(o, pb.CascadeResponse)]
    refused = [o for o in outcomes if isinstance(o, aio.AioRpcError)]
    assert len(answered) + len(refused) == 2 * CALLS_PER_REPLICA
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert answered
    assert refused
    spent = sum(r.total_cost_usd for r in answered)
    assert spent <= BUDGET
    assert sum(len(p.calls) for p in providers) == len(answered)
    state = StateStore.open(pg_url)
    try:
        spend = await state.spend("acme", 3600.0)
    finally:
        await state.aclose()
    assert spend.reserved_usd == 0.0
    assert spend.settled_usd == pytest.approx(spent)
    assert spend.settled_usd == pytest.approx(len(answered) * COST)


async def test_a_sessions_floor_raised_on_one_replica_holds_on_the_other(pg_url, tmp_path) -> None:
    """A Cascade escalated to mid on replica A keeps the session's next Route on replica B
    at mid; another tenant's session of the same id is its own."""
    settings = _replica_settings(pg_url, tmp_path)
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("wrong")], MID: [Reply.answer("right")]},
        judges={MID: [Reply.verdict(False, ["wrong"])], "claude-opus-4-8": [Reply.verdict(True)]},
    )
    async with (
        running_server(settings, scorer=EASY, provider=provider) as a,
        running_server(settings, scorer=EASY, provider=ScriptedProvider()) as b,
    ):
        escalated = await a.stub.Cascade(
            pb.CascadeRequest(
                query="hard one",
                tenant_id="acme",
                session_id="chat-1",
                judge_mode=pb.JUDGE_MODE_ALWAYS,
                speculation=pb.SPECULATION_MODE_OFF,
            )
        )
        same = await b.stub.Route(
            pb.RouteRequest(query="easy", tenant_id="acme", session_id="chat-1")
        )
        other = await b.stub.Route(
            pb.RouteRequest(query="easy", tenant_id="globex", session_id="chat-1")
        )
    assert escalated.tier.name == "mid"
    assert same.tier.name == "mid"
    assert same.reasons[-1].code == pb.REASON_CODE_SESSION_STICKY
    assert other.tier.name == "cheap"
