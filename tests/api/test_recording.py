"""Every Route, Cascade and Feedback call lands in the query log, through the real server:
what each record holds, what it leaves out, and whose calls feedback may name."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import QueryLogWriter, QueryRecord, hash_query, open_store
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.06, 0.04))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
            "TIERROUTE_QUERYLOG_FLUSH_INTERVAL_S": "0.05",
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
            **extra,
        }
    )


async def _records(tmp_path: Path) -> list[QueryRecord]:
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        return list(await store.fetch_queries())
    finally:
        await store.aclose()


async def test_route_call_is_logged_without_its_text(tmp_path: Path) -> None:
    """A Route call is logged with its decision and the query's hash, never its text."""
    async with running_server(_settings(tmp_path), scorer=EASY) as s:
        r = await s.stub.Route(pb.RouteRequest(query="What is 2+2?", tenant_id="acme"))
    (record,) = await _records(tmp_path)
    assert record.request_id == r.request_id
    assert record.kind == "route"
    assert record.chosen_tier == "cheap"
    assert record.tenant_id == "acme"
    assert record.query_sha256 == hash_query("What is 2+2?")
    assert record.query_text is None
    assert record.scores == pytest.approx([0.9, 0.06, 0.04])


async def test_query_text_is_stored_only_when_opted_in(tmp_path: Path) -> None:
    """With querylog.store_text on, the query text is kept."""
    settings = _settings(tmp_path, TIERROUTE_QUERYLOG_STORE_TEXT="true")
    async with running_server(settings, scorer=EASY) as s:
        await s.stub.Route(pb.RouteRequest(query="What is 2+2?"))
    (record,) = await _records(tmp_path)
    assert record.query_text == "What is 2+2?"


async def test_rejected_call_is_logged_with_its_status(tmp_path: Path) -> None:
    """A call rejected as INVALID_ARGUMENT is still logged, with that status."""
    async with running_server(_settings(tmp_path), scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError):
            await s.stub.Route(pb.RouteRequest(query="   ", request_id="bad-1"))
    (record,) = await _records(tmp_path)
    assert (record.request_id, record.status) == ("bad-1", "INVALID_ARGUMENT")


async def test_cascade_call_is_logged_with_every_hop(tmp_path: Path) -> None:
    """A Cascade call is logged with its hops, costs, final tier and judge status."""
    async with running_server(_settings(tmp_path), scorer=EASY) as s:
        r = await s.stub.Cascade(
            pb.CascadeRequest(query="Name a prime number.", judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
    (record,) = await _records(tmp_path)
    assert record.kind == "cascade"
    assert len(record.hops) == len(r.hops)
    assert record.total_cost_usd == pytest.approx(r.total_cost_usd)
    assert record.final_tier == r.tier.name
    assert record.judge_status


async def test_feedback_is_recorded_against_a_logged_call(tmp_path: Path) -> None:
    """Feedback on a logged request id is stored; an unknown id is NOT_FOUND."""
    settings = _settings(tmp_path)
    writer = QueryLogWriter.from_config(settings.querylog)
    await writer.start()
    try:
        async with running_server(settings, scorer=EASY, querylog=writer) as s:
            r = await s.stub.Route(pb.RouteRequest(query="What is 2+2?"))
            ack = await s.stub.Feedback(pb.FeedbackRequest(request_id=r.request_id, rating=4))
            # Once flushed, "unknown" is decided by the store, not by a slow-database guess.
            await writer.flush()
            with pytest.raises(aio.AioRpcError) as err:
                await s.stub.Feedback(pb.FeedbackRequest(request_id="never-seen", correct=False))
    finally:
        await writer.close(10)
    assert ack.request_id == r.request_id
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        (feedback,) = await store.fetch_feedback()
    finally:
        await store.aclose()
    assert (feedback.request_id, feedback.rating, feedback.correct) == (r.request_id, 4, None)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.FeedbackRequest(request_id="x", rating=9), "1-5"),
        (pb.FeedbackRequest(request_id="x"), "rating, a correct flag"),
        (pb.FeedbackRequest(rating=3), "request_id"),
    ],
)
async def test_bad_feedback_is_invalid_argument(
    tmp_path: Path, request_: pb.FeedbackRequest, message: str
) -> None:
    """Feedback without a usable rating, flag or id is INVALID_ARGUMENT."""
    async with running_server(_settings(tmp_path), scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Feedback(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_feedback_without_a_query_log_is_failed_precondition() -> None:
    """With the query log disabled, feedback is refused as FAILED_PRECONDITION."""
    async with running_server(scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Feedback(pb.FeedbackRequest(request_id="x", rating=3))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_judge_issue_text_stays_out_of_the_query_log(tmp_path: Path) -> None:
    """Judge issues (free text quoting the answer) are not logged unless text is opted in."""
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


async def test_cache_tokens_and_the_stop_reason_are_logged(tmp_path: Path) -> None:
    """Each hop keeps its cache writes and reads; the record sums them and keeps the stop."""
    provider = ScriptedProvider(
        answers={
            CHEAP: [
                Reply.tool_call(
                    "lookup",
                    {"q": "x"},
                    cache_creation_input_tokens=300,
                    cache_read_input_tokens=0,
                )
            ]
        }
    )
    async with running_server(_settings(tmp_path), scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(pb.CascadeRequest(query="Look it up.", tools=[pb.Tool(name="lookup")]))
    (record,) = await _records(tmp_path)
    assert [
        (h["cache_creation_input_tokens"], h["cache_read_input_tokens"]) for h in record.hops
    ] == [(300, 0)]
    assert (record.cache_creation_tokens, record.cache_read_tokens) == (300, 0)
    assert (record.stop_reason, record.judge_status) == ("tool_use", "tool_use")
    assert record.hops[0]["cost_usd"] == pytest.approx(
        (100 + 300 * 1.25) * 1.0 / 1e6 + 20 * 5.0 / 1e6
    )


async def test_a_streamed_cascade_is_logged_like_a_unary_one(tmp_path: Path) -> None:
    """CascadeStream's call lands in the log once, with its hops and final tier."""
    async with running_server(_settings(tmp_path), scorer=EASY) as s:
        events = [
            e
            async for e in s.stub.CascadeStream(
                pb.CascadeRequest(query="Name a prime number.", judge_mode=pb.JUDGE_MODE_ALWAYS)
            )
        ]
    response = events[-1].response
    (record,) = await _records(tmp_path)
    assert record.request_id == response.request_id
    assert (record.kind, record.status) == ("cascade", "OK")
    assert len(record.hops) == len(response.hops)
    assert record.final_tier == response.tier.name
