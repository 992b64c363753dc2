"""The Cascade RPC end to end: a real server, its own replay backend, a real channel."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.fixtures import make_records, write_dataset
from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

RECORDS = make_records(60)


def _distinct_wrong_answers(record: dict[str, Any]) -> None:
    # The fixture's wrong tiers share one wrong answer, which the replay judge (agreement
    # with its own answer) would pass; real models often differ, as here.
    for key, letter in (("flash-model", "X"), ("pro-model", "Y")):
        outcome = record["models"][key]
        if not outcome["correct"]:
            outcome["pred"] = letter
            outcome["response"] = f"Reasoning by {key}. The answer is ({letter})."


for _r in RECORDS:
    _distinct_wrong_answers(_r)
EASY = StaticScorer((0.95, 0.03, 0.02))


def _record(difficulty_label: str) -> dict[str, object]:
    return next(r for r in RECORDS if r["min_tier_correct"] == difficulty_label)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    """A small recorded-outcome file the server's replay backend serves."""
    return write_dataset(tmp_path / "replay.jsonl.gz", RECORDS)


@pytest.fixture
async def served(data_file: Path) -> AsyncIterator[Running]:
    """A server whose replay backend serves the fixture file instantly."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data_file), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    async with running_server(settings, scorer=EASY, environ={}) as s:
        yield s


async def test_cheap_answer_passes_its_judge(served: Running) -> None:
    """A query the cheap tier answers right is answered there and passes the mid judge."""
    record = _record("cheap")
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert r.tier.name == "cheap"
    assert r.judge_status == pb.JUDGE_STATUS_PASSED
    assert [(h.tier, h.role) for h in r.hops] == [
        ("cheap", pb.HOP_ROLE_ANSWER),
        ("mid", pb.HOP_ROLE_JUDGE),
    ]
    assert r.answer == RECORDS[RECORDS.index(record)]["models"]["flash-model"]["response"]  # type: ignore[index]
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))
    assert r.route.tier.name == "cheap"


async def test_hard_query_escalates_twice(served: Running) -> None:
    """A query only the top tier answers right escalates cheap -> mid -> expensive."""
    record = next(r for r in RECORDS if r["min_tier_correct"] == "expensive")
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(record["prompt"]), judge_mode=pb.JUDGE_MODE_ALWAYS)
    )
    assert r.tier.name == "expensive"
    assert r.escalated
    assert [x.code for x in r.escalation_reasons] == [pb.REASON_CODE_JUDGE_FAILED] * 2
    assert r.judge_status == pb.JUDGE_STATUS_NOT_REQUIRED


async def test_fault_metadata_reaches_the_replay_backend(served: Running) -> None:
    """A 529 injected on the cheap tier through call metadata falls over to mid."""
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(_record("cheap")["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER),
        metadata=(("x-tierroute-fault", "529@cheap"),),
    )
    assert r.tier.name == "mid"
    assert r.hops[0].outcome == pb.HOP_OUTCOME_ERROR
    assert r.hops[0].error_kind == "overloaded"
    assert r.degraded
    assert r.escalation_reasons[0].code == pb.REASON_CODE_PROVIDER_ERROR


async def test_sampled_out_answer_is_not_called_passed(served: Running) -> None:
    """With judging off the cheap answer comes back SAMPLED_OUT, not PASSED."""
    r = await served.stub.Cascade(
        pb.CascadeRequest(query=str(_record("mid")["prompt"]), judge_mode=pb.JUDGE_MODE_NEVER)
    )
    assert r.judge_status == pb.JUDGE_STATUS_SAMPLED_OUT
    assert [h.role for h in r.hops] == [pb.HOP_ROLE_ANSWER]


async def test_unknown_prompt_gets_a_synthetic_answer(served: Running) -> None:
    """A prompt the replay data does not know still gets a deterministic answer."""
    request = pb.CascadeRequest(query="Tell me about otters.", judge_mode=pb.JUDGE_MODE_NEVER)
    first = await served.stub.Cascade(request)
    second = await served.stub.Cascade(request)
    assert first.answer
    assert first.answer == second.answer


BAD = {
    "unknown start tier": (pb.CascadeRequest(query="q", start_tier="gold"), "start_tier"),
    "self routing with start tier": (
        pb.CascadeRequest(query="q", strategy=pb.STRATEGY_SELF_ROUTING, start_tier="mid"),
        "self-routing",
    ),
    "output tokens over limit": (
        pb.CascadeRequest(query="q", max_output_tokens=10**6),
        "max_output_tokens",
    ),
    "negative output tokens": (pb.CascadeRequest(query="q", max_output_tokens=-1), "negative"),
    "unknown speculation": (pb.CascadeRequest(query="q", speculation=9), "speculation"),
    "unknown judge mode": (pb.CascadeRequest(query="q", judge_mode=9), "judge_mode"),
    "empty query": (pb.CascadeRequest(query=" "), "query is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_cascade_input_is_invalid_argument(served: Running, case: str) -> None:
    """Each kind of bad Cascade input is INVALID_ARGUMENT with a readable reason."""
    request, message = BAD[case]
    with pytest.raises(aio.AioRpcError) as err:
        await served.stub.Cascade(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_server_deadline_cap_gives_deadline_exceeded(data_file: Path) -> None:
    """When the server's deadline cap passes first, the caller gets DEADLINE_EXCEEDED."""
    settings = make_settings(
        {
            "TIERROUTE_REPLAY_DATA": str(data_file),
            "TIERROUTE_REPLAY_TIME_SCALE": "1",
            "TIERROUTE_CASCADE_MAX_DEADLINE_S": "0.05",
        }
    )
    async with running_server(settings, scorer=EASY, environ={}) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Cascade(
                pb.CascadeRequest(query=str(_record("cheap")["prompt"])), timeout=30
            )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_cancellation_cancels_provider_calls(data_file: Path) -> None:
    """A client that cancels its call makes the server drop the provider call in flight."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data_file), "TIERROUTE_REPLAY_TIME_SCALE": "100"}
    )
    async with running_server(settings, scorer=EASY, environ={}) as s:
        backend = s.server.backend
        assert backend is not None
        assert backend.replay is not None
        replay = backend.replay
        call = s.stub.Cascade(pb.CascadeRequest(query=str(_record("cheap")["prompt"])))
        started = await asyncio.to_thread(replay.wait_for, lambda st: st.in_flight >= 1, 30)
        assert started
        call.cancel()
        dropped = await asyncio.to_thread(replay.wait_for, lambda st: st.disconnected >= 1, 30)
        assert dropped
        assert replay.stats().in_flight == 0 or await asyncio.to_thread(
            replay.wait_for, lambda st: st.in_flight == 0, 30
        )


async def _cli(*args: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tierroute",
        "--log-level",
        "WARNING",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_cli_cascade_json_has_the_documented_keys(served: Running) -> None:
    """`tierroute cascade --json` prints one object with the documented keys."""
    result = await _cli(
        "cascade",
        "--json",
        "--judge",
        "always",
        "--target",
        f"127.0.0.1:{served.port}",
        str(_record("mid")["prompt"]),
    )
    assert {"answer", "tier", "hops", "total_cost_usd", "escalated", "judge_status"} <= set(result)
    assert result["tier"] == "mid"
    assert result["escalated"] is True


async def test_cli_route_json_has_the_documented_keys(served: Running) -> None:
    """`tierroute route --json` prints one object with the documented keys."""
    result = await _cli("route", "--json", "--target", f"127.0.0.1:{served.port}", "hello")
    assert {"tier", "model", "strategy", "scores", "reasons", "model_version"} <= set(result)
    assert result["tier"] == "cheap"
    assert result["model_version"] == "static-test"


async def test_cascade_starts_on_its_own_thresholds_while_route_keeps_its_own(
    data_file: Path,
) -> None:
    """Route uses the static thresholds; Cascade starts where its calibrated thresholds say."""
    scorer = StaticScorer((0.5, 0.3, 0.2), risk=(0.1, 0.3), cascade_risk=(0.9, 0.9))
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data_file), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    query = str(_record("cheap")["prompt"])
    async with running_server(settings, scorer=scorer, environ={}) as s:
        routed = await s.stub.Route(pb.RouteRequest(query=query))
        answered = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
    assert routed.tier.name == "mid"  # risk 0.5 > 0.1 on cheap; 0.2 <= 0.3 on mid
    assert answered.route.tier.name == "cheap"  # risk 0.5 <= 0.9 on cheap
    assert answered.route.thresholds["max_risk_cheap"] == pytest.approx(0.9)


async def test_cascade_without_a_judge_starts_where_route_would(data_file: Path) -> None:
    """With judging turned off, Cascade starts on Route's thresholds, not the cascade's."""
    scorer = StaticScorer((0.5, 0.3, 0.2), risk=(0.1, 0.3), cascade_risk=(0.9, 0.9))
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data_file), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    query = str(_record("cheap")["prompt"])
    async with running_server(settings, scorer=scorer, environ={}) as s:
        judged = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_ALWAYS)
        )
        unjudged = await s.stub.Cascade(
            pb.CascadeRequest(query=query, judge_mode=pb.JUDGE_MODE_NEVER)
        )
    assert judged.route.tier.name == "cheap"
    assert unjudged.route.tier.name == "mid"
