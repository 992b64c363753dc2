"""Routing audits: sampling, figures checked by hand on a small log, examples, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings, running_server
from tierroute.offline.audit import AuditOptions, allocate, run_audit, stratified_sample
from tierroute.offline.cli.operations import add_audit_parser
from tierroute.providers.replay.messages import ReplayEngine
from tierroute.providers.replay.provider import ReplayProvider
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.querylog import QueryLogWriter, QueryRecord, hash_query, open_store
from tierroute.querylog.doubles import sample_record
from tierroute.settings import QueryLogConfig, Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)
RECORDS = make_records(12)
# Fixture records 3, 9 and 10 are the ones only the mid tier gets right: the mid judge fails
# the cheap answer on exactly those (the replay judge compares its own recorded answer).
AUDITED = {0: "factual", 1: "factual", 2: "factual", 3: "factual", 4: "coding", 5: "coding",
           9: "analytical", 10: "analytical"}  # fmt: skip


def fast_settings(**extra: str) -> Settings:
    """Test settings whose replay backend answers at once."""
    return make_settings({"TIERROUTE_REPLAY_TIME_SCALE": "0", **extra})


def logged(index: int, **changes: Any) -> QueryRecord:
    """A cheap-answered Cascade record of fixture record `index`, with its audit sample."""
    source = RECORDS[index]
    prompt = source["prompt"]
    fields: dict[str, Any] = {
        "request_id": f"req-{index:02d}",
        "ts": NOW - timedelta(hours=index + 1),
        "query_sha256": hash_query(prompt),
        "query_chars": len(prompt),
        "query_text": prompt,
        "answer_text": source["models"]["flash-model"]["response"],
        "query_type": AUDITED.get(index, "factual"),
        **changes,
    }
    return sample_record(fields.pop("request_id"), **fields)


def small_log() -> list[QueryRecord]:
    """Eight audit samples among calls the audit must leave out, for hand-checked figures."""
    records = [logged(i) for i in AUDITED]
    records += [
        # Answered cheap but without an audit sample: counted, never judged.
        logged(6, query_text=None, answer_text=None),
        logged(7, query_text=None, answer_text=None),
        # Answered by the mid tier, a failed call, a Route call, one before the window.
        logged(11, final_tier="mid"),
        logged(8, request_id="req-failed", status="UNAVAILABLE"),
        logged(8, request_id="req-route", kind="route"),
        logged(8, request_id="req-old", ts=SINCE - timedelta(minutes=1)),
    ]
    return records


def replay_provider(settings: Settings) -> ReplayProvider:
    """The replay backend in-process, answering from the 12 fixture records."""
    engine = ReplayEngine(ReplayStore(RECORDS), settings.tiers, settings.replay)
    return ReplayProvider(engine)


async def write_log(url: str, records: list[QueryRecord]) -> None:
    """Store `records` as the servers would have (migrated schema, one batch)."""
    store = open_store(url)
    await store.migrate()
    await store.write_batch(records, [])
    await store.aclose()


async def audit(url: str, settings: Settings, **options: Any) -> Any:
    """Run the audit over the log at `url` with the replay judge."""
    store = open_store(url)
    try:
        return await run_audit(
            store, replay_provider(settings), settings, AuditOptions(since=SINCE, **options)
        )
    finally:
        await store.aclose()


def test_allocation_is_proportional_with_every_type_represented() -> None:
    """8 draws over strata of 50, 30, 15 and 5 give 4, 2, 1 and 1 (largest remainder)."""
    sizes = {"factual": 50, "coding": 30, "analytical": 15, "creative": 5}
    assert allocate(sizes, 8) == {"factual": 4, "coding": 2, "analytical": 1, "creative": 1}


def test_allocation_never_exceeds_a_stratum() -> None:
    """Asking for more than a stratum holds takes all of it and no more."""
    assert allocate({"a": 2, "b": 10}, 20) == {"a": 2, "b": 10}


def test_the_sample_follows_the_allocation_and_the_seed() -> None:
    """The sample has the allocated count per type, and the same seed draws the same sample."""
    records = [logged(i) for i in AUDITED]
    first = stratified_sample(records, 4, seed=3)
    assert {k: len(v) for k, v in first.items()} == {"analytical": 1, "coding": 1, "factual": 2}
    again = stratified_sample(list(reversed(records)), 4, seed=3)
    assert {k: [r.request_id for r in v] for k, v in first.items()} == {
        k: [r.request_id for r in v] for k, v in again.items()
    }


async def test_audit_figures_match_the_hand_count(log_url: str) -> None:
    """On the small log: 10 cheap answers, 8 sampled, 3 misroutes, rate 0.375, per type too."""
    await write_log(log_url, small_log())
    report = await audit(log_url, fast_settings())
    assert (report.cheap_answered, report.without_text, report.population) == (10, 2, 8)
    assert (report.sample_size, report.judged, report.unavailable) == (8, 8, 0)
    assert report.misroutes == 3
    assert report.misroute_rate == 0.375
    assert report.above_threshold
    by_type = {k: (v.population, v.judged, v.misroutes) for k, v in report.by_query_type.items()}
    assert by_type == {"analytical": (2, 2, 2), "coding": (2, 2, 0), "factual": (4, 4, 1)}
    assert (report.judge_tier, report.answered_tier) == ("mid", "cheap")


async def test_examples_show_the_hash_unless_text_is_stored(tmp_path: Path) -> None:
    """Without store_text, examples name the query's SHA-256; the issues say what was wrong."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, small_log())
    report = await audit(url, fast_settings())
    examples = {e.request_id: e for e in report.examples}
    assert sorted(examples) == ["req-03", "req-09", "req-10"]
    assert examples["req-03"].query == hash_query(RECORDS[3]["prompt"])
    assert examples["req-03"].issues == (
        "The final answer (A) disagrees with the grader's own solution (D).",
    )
    assert examples["req-03"].date == "2025-03-10"


async def test_examples_show_a_prefix_when_text_is_stored(tmp_path: Path) -> None:
    """With store_text on, an example shows the start of the question."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, small_log())
    report = await audit(url, fast_settings(TIERROUTE_QUERYLOG_STORE_TEXT="true"))
    example = next(e for e in report.examples if e.request_id == "req-09")
    assert example.query == "Question 9: explain the colour of the capital in case 9?"
    assert report.as_dict()["query_shown_as"] == "prefix"


async def test_a_judge_without_a_verdict_counts_neither_way(tmp_path: Path) -> None:
    """An unparseable verdict is 'no verdict': not a pass, not a misroute, not in the rate."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, [logged(0), logged(3)])
    settings = fast_settings()
    mid = settings.tiers[1].model
    provider = ScriptedProvider(
        judges={mid: [Reply.raw_tool_input(None), Reply.verdict(False, ["wrong"])]}
    )
    store = open_store(url)
    report = await run_audit(store, provider, settings, AuditOptions(since=SINCE, concurrency=1))
    await store.aclose()
    assert (report.sample_size, report.judged, report.unavailable) == (2, 1, 1)
    assert (report.misroutes, report.misroute_rate) == (1, 1.0)


def _run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    add_audit_parser(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    code: int = args.func(args, settings, {})
    return code


@pytest.fixture
def cli_settings(tmp_path: Path) -> Settings:
    """Settings whose replay backend (a real local server) serves the fixture records."""
    data = write_dataset(tmp_path / "replay.jsonl.gz", RECORDS)
    return fast_settings(TIERROUTE_REPLAY_DATA=str(data))


async def test_cli_exits_3_above_the_misroute_rate(
    tmp_path: Path, cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute audit` over the replay backend: 37.5 % > 5 % exits 3, with the figures."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, small_log())
    argv = ["--db", url, "--since", SINCE.isoformat(), "--json"]
    assert await _in_thread(_run_cli, argv, cli_settings) == 3
    printed = json.loads(capsys.readouterr().out)
    assert (printed["sample_size"], printed["misroutes"], printed["misroute_rate"]) == (
        8,
        3,
        0.375,
    )


async def test_cli_exits_0_within_the_rate(tmp_path: Path, cli_settings: Settings) -> None:
    """The same log under a 50 % limit exits 0."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, small_log())
    argv = ["--db", url, "--since", SINCE.isoformat(), "--max-misroute-rate", "0.5"]
    assert await _in_thread(_run_cli, argv, cli_settings) == 0


async def test_cli_exits_4_when_nothing_could_be_judged(
    tmp_path: Path, cli_settings: Settings
) -> None:
    """A log with no audit samples has nothing to judge: exit 4, so a scheduler notices."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await write_log(url, [logged(6, query_text=None, answer_text=None)])
    argv = ["--db", url, "--since", SINCE.isoformat()]
    assert await _in_thread(_run_cli, argv, cli_settings) == 4


def test_cli_exits_1_without_a_log(tmp_path: Path, cli_settings: Settings) -> None:
    """No query log at the URL: exit 1."""
    url = f"sqlite:///{tmp_path / 'absent.sqlite3'}"
    assert _run_cli(["--db", url], cli_settings) == 1


async def _in_thread(func: Any, *args: Any) -> Any:
    # The CLI runs its own event loop (asyncio.run); keep it off the test's loop.
    return await asyncio.to_thread(func, *args)


# -- what the server stores for audits -------------------------------------------------------


def _server_settings(tmp_path: Path, **extra: str) -> Settings:
    return make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'served.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            **extra,
        }
    )


async def _one_cascade(settings: Settings) -> QueryRecord:
    provider = ScriptedProvider(answers={settings.tiers[0].model: [Reply.answer("Paris.")]})
    scorer = StaticScorer((0.9, 0.05, 0.05))
    async with running_server(settings, scorer=scorer, provider=provider) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(
                query="What is the capital of France?",
                request_id="audited",
                judge_mode=pb.JUDGE_MODE_NEVER,
                speculation=pb.SPECULATION_MODE_OFF,
            ),
            timeout=30,
        )
    store = open_store(settings.querylog.url.get())
    (record,) = await store.fetch_queries()
    await store.aclose()
    return record


async def test_the_server_keeps_question_and_answer_for_audit_samples(tmp_path: Path) -> None:
    """With audit_sample_rate = 1, a Cascade record holds the question and the answer."""
    record = await _one_cascade(
        _server_settings(tmp_path, TIERROUTE_QUERYLOG_AUDIT_SAMPLE_RATE="1")
    )
    assert (record.query_text, record.answer_text) == ("What is the capital of France?", "Paris.")


async def test_by_default_the_server_keeps_neither_question_nor_answer(tmp_path: Path) -> None:
    """Privacy by default: no audit sampling, so no text of any kind is stored."""
    record = await _one_cascade(_server_settings(tmp_path))
    assert (record.query_text, record.answer_text) == (None, None)


async def test_the_writer_drops_answers_unless_audit_sampling_is_on(tmp_path: Path) -> None:
    """A record carrying text is stored without it when neither opt-in is set."""
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    config = QueryLogConfig(spool_path=tmp_path / "spool.jsonl")
    writer = QueryLogWriter(open_store(url), config)
    await writer.start()
    writer.submit(logged(0))
    await writer.close(10)
    store = open_store(url)
    (stored,) = await store.fetch_queries()
    await store.aclose()
    assert (stored.query_text, stored.answer_text) == (None, None)
