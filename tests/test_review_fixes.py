"""Behaviours fixed after review: system instructions, deadline margin, sessions, start-up."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tierroute import errors
from tierroute.api.server import TierRouteServer
from tierroute.api.status import status_for
from tierroute.errors import ConfigError
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import QueryLogWriter
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.store import StoreRejected, StoreUnavailable
from tierroute.settings import QueryLogConfig
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.06, 0.04))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"


async def test_system_messages_reach_every_answer_call() -> None:
    """ROLE_SYSTEM messages are sent as the system instruction of the answer calls."""
    provider = ScriptedProvider(answers={CHEAP: [Reply.answer("quatre")]})
    async with running_server(scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(
                messages=[
                    pb.ChatMessage(role=pb.ROLE_SYSTEM, content="Always answer in French."),
                    pb.ChatMessage(role=pb.ROLE_USER, content="What is 2+2?"),
                ],
                judge_mode=pb.JUDGE_MODE_NEVER,
            )
        )
    (call,) = provider.calls
    assert call.system == "Always answer in French."


async def test_answer_in_hand_reaches_a_caller_whose_deadline_cuts_the_judge() -> None:
    """A judge still running at the caller's deadline does not cost the caller the answer."""
    hung = asyncio.Event()  # never set: the judge call never returns
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("4")]},
        judges={MID: [Reply(gate=hung, text="", tool_input={"passes": True, "issues": []})]},
    )
    async with running_server(scorer=EASY, provider=provider) as s:
        r = await s.stub.Cascade(
            pb.CascadeRequest(query="What is 2+2?", judge_mode=pb.JUDGE_MODE_ALWAYS),
            timeout=2,
        )
    assert r.answer == "4"
    assert r.degraded
    assert r.judge_status != pb.JUDGE_STATUS_PASSED


async def test_session_remembers_the_tier_a_cascade_escalated_to() -> None:
    """After a Cascade escalates, later Route calls in that session do not route below it."""
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("wrong")], MID: [Reply.answer("right")]},
        judges={MID: [Reply.verdict(False, ["wrong result"])], TOP: [Reply.verdict(True)]},
    )
    async with running_server(scorer=EASY, provider=provider) as s:
        cascaded = await s.stub.Cascade(
            pb.CascadeRequest(
                query="hard one", session_id="chat-1", judge_mode=pb.JUDGE_MODE_ALWAYS
            )
        )
        same = await s.stub.Route(pb.RouteRequest(query="easy", session_id="chat-1"))
        other_tenant = await s.stub.Route(
            pb.RouteRequest(query="easy", session_id="chat-1", tenant_id="globex")
        )
    assert cascaded.tier.name == "mid"
    assert same.tier.name == "mid"
    assert other_tenant.tier.name == "cheap"


async def test_blank_earlier_turn_is_invalid_argument() -> None:
    """An empty earlier turn is refused up front instead of failing on every tier."""
    async with running_server(scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(
                pb.RouteRequest(
                    messages=[
                        pb.ChatMessage(role=pb.ROLE_USER, content=""),
                        pb.ChatMessage(role=pb.ROLE_USER, content="hi"),
                    ]
                )
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0] is empty" in (err.value.details() or "")


def test_request_refused_by_every_tier_is_not_retryable() -> None:
    """All tiers refusing the request itself maps to FAILED_PRECONDITION, not UNAVAILABLE."""
    failure = errors.AllTiersFailed("no tier could answer")
    failure.__cause__ = errors.TerminalProviderError("bad request", status_code=400)
    assert status_for(failure) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.AllTiersFailed("down")) is grpc.StatusCode.UNAVAILABLE


async def test_failed_start_up_leaves_nothing_running(tmp_path: Path) -> None:
    """A start-up that fails after the query log started releases it (and the port)."""
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "TIERROUTE_ANTHROPIC_BACKEND": "anthropic",  # and no API key: cannot work
        }
    )
    for _ in range(2):  # the second attempt would find the spool locked if it leaked
        with pytest.raises(ConfigError, match=r"api_key|API key|ANTHROPIC"):
            await TierRouteServer(settings, scorer=EASY).start("127.0.0.1", 0)


class _OutageMidRetry:
    """A store that refuses a batch, then goes down while rows are retried one by one."""

    display_url = "test://outage"

    def __init__(self) -> None:
        self.calls = 0

    async def migrate(self) -> int:
        return 1

    async def write_batch(self, queries: object, feedback: object) -> None:
        self.calls += 1
        if self.calls == 1:
            raise StoreRejected("one bad row in the batch")
        raise StoreUnavailable("the database went down")

    async def has_request(self, request_id: str) -> bool:
        return False

    async def aclose(self) -> None:
        return None


async def test_outage_during_row_retry_spools_instead_of_rejecting(tmp_path: Path) -> None:
    """A database outage mid-way through a row-by-row retry spools records, rejects none."""
    config = dataclasses.replace(
        QueryLogConfig(), spool_path=tmp_path / "spool.jsonl", batch_size=5
    )
    writer = QueryLogWriter(_OutageMidRetry(), config)  # type: ignore[arg-type]
    await writer.start()
    for i in range(5):
        writer.submit(sample_record(f"r{i}"))
    await writer.flush()
    stats = writer.stats()
    await writer.close(2)
    assert stats.rejected == 0
    assert not (tmp_path / "spool.jsonl.rejected").exists()


async def test_judge_issue_text_stays_out_of_the_query_log(tmp_path: Path) -> None:
    """Judge issues (free text quoting the answer) are not logged unless text is opted in."""
    from tierroute.querylog import open_store

    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("wrong")], MID: [Reply.answer("right")]},
        judges={MID: [Reply.verdict(False, ["it says SECRET-42"])], TOP: [Reply.verdict(True)]},
    )
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(pb.CascadeRequest(query="q", judge_mode=pb.JUDGE_MODE_ALWAYS))
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        (record,) = await store.fetch_queries()
    finally:
        await store.aclose()
    assert any(h["verdict"] == "fail" for h in record.hops)
    assert "SECRET-42" not in str(record)


async def test_feedback_only_on_the_callers_own_requests(tmp_path: Path) -> None:
    """With authentication on, a tenant cannot rate (or probe for) another tenant's call."""
    import json

    from tierroute.api.security import bearer_metadata, hash_token

    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"tenants": {"acme": [hash_token("acme-t")], "globex": [hash_token("gx-t")]}})
    )
    settings = make_settings(
        {
            "TIERROUTE_AUTH_TOKENS_FILE": str(tokens),
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    acme, globex = bearer_metadata("acme-t"), bearer_metadata("gx-t")
    writer = QueryLogWriter.from_config(settings.querylog)
    await writer.start()
    try:
        async with running_server(settings, scorer=EASY, querylog=writer) as s:
            r = await s.stub.Route(pb.RouteRequest(query="What is 2+2?"), metadata=acme)
            feedback = pb.FeedbackRequest(request_id=r.request_id, rating=5)
            with pytest.raises(aio.AioRpcError) as unflushed:
                await s.stub.Feedback(feedback, metadata=globex)
            await writer.flush()  # now the store, not the writer's memory, decides
            with pytest.raises(aio.AioRpcError) as stored:
                await s.stub.Feedback(feedback, metadata=globex)
            ack = await s.stub.Feedback(feedback, metadata=acme)
    finally:
        await writer.close(10)
    assert unflushed.value.code() == grpc.StatusCode.NOT_FOUND
    assert stored.value.code() == grpc.StatusCode.NOT_FOUND
    assert ack.request_id == r.request_id
