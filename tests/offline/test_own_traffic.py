"""`tierroute import`, `label` and `export`: a team's log in, every tier judged, labels out."""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import cascade_records, write_dataset
from tests.helpers import make_settings
from tierroute.cascade.labelling import Labeller
from tierroute.offline.cli.traffic import add_export_parser, add_import_parser, add_label_parser
from tierroute.offline.evaluation.eval_data import load_eval_data
from tierroute.outcomes import iter_records
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.providers.scripted import ScriptedProvider
from tierroute.querylog import open_store
from tierroute.settings import Settings

RECORDS = cascade_records(24)
# The replay's price ladder is the configured tiers'; the judge is the top tier.
PRICED = {
    "cheap": (1.0, 5.0),
    "mid": (3.0, 15.0),
    "expensive": (5.0, 25.0),
    "probe": (0.25, 1.25),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Replay backend over the fixture records, answering at once."""
    data = write_dataset(tmp_path / "replay.jsonl.gz", RECORDS)
    return make_settings({"TIERROUTE_REPLAY_DATA": str(data), "TIERROUTE_REPLAY_TIME_SCALE": "0"})


def team_log(path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """A JSONL log of the fixture questions, as a team's gateway would have kept it."""
    rows = rows or [
        {
            "query": r["prompt"],
            "model_used": "claude-sonnet-4-6",
            "cost_usd": 0.002,
            "tokens": {"input": 100, "output": 50},
            "user_rating": 1 + i % 5,
            "timestamp": f"2026-11-{1 + i % 28:02d}T10:00:00Z",
        }
        for i, r in enumerate(RECORDS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for add in (add_import_parser, add_label_parser, add_export_parser):
        add(sub)
    args = parser.parse_args(list(argv))
    code: int = args.func(args, settings, {})
    return code


async def cli(settings: Settings, *argv: str) -> int:
    """Run one of the commands as `tierroute` would (off the loop: it runs its own)."""
    return await asyncio.to_thread(_cli, settings, *argv)


async def run_json(
    settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0
) -> Any:
    """Run a command with --json; its printed document."""
    capsys.readouterr()
    assert await cli(settings, *argv, "--json") == code
    return json.loads(capsys.readouterr().out)


async def stored(db: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Queries, feedback and tier labels in the log."""
    store = open_store(db)
    try:
        queries = await store.fetch_queries()
        return queries, await store.fetch_feedback(), await store.fetch_tier_labels()
    finally:
        await store.aclose()


async def test_import_stores_each_question_with_its_text_model_and_rating(
    log_url: str, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every JSONL row becomes an answered call on the tier serving its model, with text."""
    doc = await run_json(
        settings, capsys, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl"))
    )
    queries, feedback, _ = await stored(log_url)
    assert doc["queries_written"] == len(RECORDS) == len(queries)
    assert {q.query_text for q in queries} == {r["prompt"] for r in RECORDS}
    assert {q.final_tier for q in queries} == {"mid"}
    assert queries[0].hops[0]["input_tokens"] == 100
    assert sorted(f.rating for f in feedback) == sorted(1 + i % 5 for i in range(len(RECORDS)))


async def test_importing_the_same_file_twice_adds_nothing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows get ids derived from their content, so a second import is a no-op."""
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    path = team_log(tmp_path / "l.jsonl")
    for _ in range(2):
        assert await cli(settings, "import", "--db", log_url, str(path), "--quiet") == 0
    queries, feedback, _ = await stored(log_url)
    assert (len(queries), len(feedback)) == (len(RECORDS), len(RECORDS))


async def test_csv_messages_import_the_last_user_turn_as_the_question(
    settings: Settings, tmp_path: Path
) -> None:
    """A CSV `messages` cell (JSON) imports the last user turn's text, unix timestamps too."""
    path = tmp_path / "log.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["messages", "timestamp", "tokens"])
        writer.writeheader()
        turns = [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
        ]
        writer.writerow({"messages": json.dumps(turns), "timestamp": "1764000000", "tokens": "7"})
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    assert await cli(settings, "import", "--db", log_url, str(path), "--quiet") == 0
    (query,), _, _ = await stored(log_url)
    assert query.query_text == "What is 2 + 2?"
    assert query.ts.timestamp() == 1764000000
    assert query.final_tier == ""


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"model_used": "x"}, "query"),
        ({"query": "q", "cost_usd": "cheap"}, "cost_usd"),
        ({"query": "q", "user_rating": 7}, "user_rating"),
        ({"query": "q", "timestamp": "last tuesday"}, "timestamp"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)
async def test_a_bad_row_fails_on_one_line_naming_line_and_field(
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: dict[str, Any],
    field: str,
) -> None:
    """Exit 2, the file's line number and the field in one line, and nothing written."""
    path = team_log(tmp_path / "l.jsonl", [{"query": "fine"}, {"query": "also fine"}, row])
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    assert await cli(settings, "import", "--db", log_url, str(path), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"l.jsonl:3: field '{field}'" in err
    assert not (tmp_path / "log.sqlite3").exists()


async def test_label_stores_every_tier_answer_and_the_probe_answer_priced(
    log_url: str, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each sampled question gets one row per tier and one for the probe, at their prices."""
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    doc = await run_json(settings, capsys, "label", "--db", log_url, "--sample", "9", "--quiet")
    _, _, labels = await stored(log_url)
    assert doc["questions_fully_labelled"] == 9
    assert sorted(Counter(lab.tier for lab in labels).items()) == [
        ("cheap", 9), ("expensive", 9), ("mid", 9), ("probe", 9)
    ]  # fmt: skip
    for lab in labels:
        price_in, price_out = PRICED[lab.tier]
        expected = (lab.input_tokens * price_in + lab.output_tokens * price_out) / 1e6
        assert lab.cost_usd == pytest.approx(expected)
        assert lab.answer_text
    assert doc["spent_usd"] == pytest.approx(sum(lab.total_cost_usd for lab in labels))


async def test_no_tier_grades_its_own_answer_under_consensus(
    log_url: str, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every tier's verdict comes from the answers' consensus or another tier's judge."""
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    await cli(settings, "label", "--db", log_url, "--sample", "9", "--quiet")
    _, _, labels = await stored(log_url)
    tiers = [lab for lab in labels if lab.tier in ("cheap", "mid", "expensive")]
    assert tiers
    assert all(lab.judge_tier != lab.tier for lab in tiers)


def _top_wrong(tmp_path: Path) -> Settings:
    """Replay over one question that the top tier gets wrong and the others get right."""
    record = copy.deepcopy(next(r for r in RECORDS if r["min_tier_correct"] == "cheap"))
    top = record["models"][record["tiers"]["expensive"]]
    top.update(correct=0, pred="Z", response="Reasoning by big-model. The answer is (Z).")
    data = write_dataset(tmp_path / "top-wrong.jsonl.gz", [record])
    log = team_log(tmp_path / "one.jsonl", [{"query": record["prompt"]}])
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    _cli(settings, "import", "--db", f"sqlite:///{tmp_path / 'log.sqlite3'}", str(log), "--quiet")
    return settings


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("consensus", {"cheap": "pass", "mid": "pass", "expensive": "fail"}),
        ("judge", {"cheap": "fail", "mid": "fail", "expensive": "pass"}),
    ],
)
async def test_a_wrong_top_answer_fails_by_consensus_and_passes_its_own_judge(
    tmp_path: Path, method: str, expected: dict[str, str]
) -> None:
    """Cheap and mid agree against the top tier: consensus fails the top, a self-judge not."""
    settings = await asyncio.to_thread(_top_wrong, tmp_path)
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await cli(settings, "label", "--db", url, "--sample", "1", "--method", method, "--quiet")
    _, _, labels = await stored(url)
    assert {lab.tier: lab.verdict for lab in labels if lab.tier in expected} == expected


async def test_label_samples_every_query_type(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample smaller than the log still draws from every query type present."""
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    queries, _, _ = await stored(log_url)
    kinds = {q.query_type for q in queries}
    doc = await run_json(
        settings, capsys, "label", "--db", log_url, "--sample", str(len(kinds)), "--quiet"
    )
    assert set(doc["sampled_by_query_type"]) == kinds


async def test_label_stops_before_the_spend_limit_and_resumes_without_paying_twice(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stopped by --max-spend-usd (exit 3, under the limit), a rerun pays only the rest."""
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    args = ("label", "--db", log_url, "--sample", "6", "--quiet", "--concurrency", "1",
            "--max-output-tokens", "1024")  # fmt: skip
    labeller = Labeller(ScriptedProvider(), settings, max_output_tokens=1024)
    # Room for one question at its worst case: the next does not fit once anything is paid.
    limit = max(labeller.worst_case_usd(r["prompt"], settings.tiers) for r in RECORDS) * 1.001
    first = await run_json(settings, capsys, *args, "--max-spend-usd", f"{limit:.6f}", code=3)
    assert first["stopped_by_budget"]
    assert 0 < first["spent_usd"] <= limit
    _, _, before = await stored(log_url)
    tier_rows = sum(lab.tier != "probe" for lab in before)
    second = await run_json(settings, capsys, *args)
    _, _, after = await stored(log_url)
    assert second["units"]["already_labelled"] == tier_rows == first["units"]["labelled_now"]
    assert second["units"]["labelled_now"] == 18 - tier_rows
    assert second["spent_usd"] == pytest.approx(
        sum(lab.total_cost_usd for lab in after) - sum(lab.total_cost_usd for lab in before)
    )


async def test_export_writes_the_shared_schema_with_verdicts_as_correct(
    log_url: str, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export reads like dev (eval data, replay store), `correct` is the judge's verdict."""
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    await cli(settings, "label", "--db", log_url, "--sample", "12", "--quiet")
    out = tmp_path / "labels.jsonl.gz"
    doc = await run_json(
        settings, capsys, "export", "--db", log_url, "--labeled", "--out", str(out)
    )
    records = list(iter_records(out))
    _, _, labels = await stored(log_url)
    verdicts = {(lab.request_id, lab.model): lab.verdict for lab in labels}
    assert doc["records"] == len(records) == 12
    for record in records:
        rid = record["id"].removeprefix("querylog/")
        for model, outcome in record["models"].items():
            assert outcome["correct"] == int(verdicts[(rid, model)] == "pass")
    assert len(load_eval_data(out)) == 12
    store = ReplayStore(records)
    assert store.lookup(records[0]["prompt"]) is not None


async def test_export_with_nothing_labelled_exits_2(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No fully labelled question: a clear message, exit 2, no file."""
    log_url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    await cli(settings, "import", "--db", log_url, str(team_log(tmp_path / "l.jsonl")), "--quiet")
    out = tmp_path / "labels.jsonl.gz"
    assert await cli(settings, "export", "--db", log_url, "--labeled", "--out", str(out)) == 2
    assert "run tierroute label first" in capsys.readouterr().err
    assert not out.exists()


async def test_prose_answers_go_to_a_judge_billed_for_its_working_never_their_own_tier(
    tmp_path: Path,
) -> None:
    """No final answers to compare: judge calls, each billed its recorded working, top by mid."""
    record = copy.deepcopy(RECORDS[0])
    for key, outcome in record["models"].items():
        outcome["response"] = f"Reasoning by {key}: it is {outcome['pred']}, plainly."
    data = write_dataset(tmp_path / "prose.jsonl.gz", [record])
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    log = team_log(tmp_path / "one.jsonl", [{"query": record["prompt"]}])
    await cli(settings, "import", "--db", url, str(log), "--quiet")
    await cli(settings, "label", "--db", url, "--sample", "1", "--quiet")
    _, _, labels = await stored(url)
    by_tier = {lab.tier: lab for lab in labels}
    judged_by = {t: by_tier[t].judge_tier for t in ("cheap", "mid", "expensive")}
    assert judged_by == {"cheap": "expensive", "mid": "expensive", "expensive": "mid"}
    # The judging model's recorded output (its own solution) is billed before the verdict.
    recorded = {
        tier: record["models"][key]["output_tokens"] for tier, key in record["tiers"].items()
    }
    for tier, judge in judged_by.items():
        assert by_tier[tier].judge_output_tokens > recorded[judge]
        price_in, price_out = PRICED[judge]
        assert by_tier[tier].judge_cost_usd == pytest.approx(
            (
                by_tier[tier].judge_input_tokens * price_in
                + by_tier[tier].judge_output_tokens * price_out
            )
            / 1e6
        )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("consensus", {"cheap": "fail", "mid": "fail", "expensive": "pass"}),
        ("majority", {"cheap": "fail", "mid": "fail", "expensive": "fail"}),
    ],
)
async def test_a_split_vote_goes_to_the_reference_or_to_no_answer(
    tmp_path: Path, method: str, expected: dict[str, str]
) -> None:
    """Every answer differs: consensus lets the reference tier's answer decide, majority none."""
    record = copy.deepcopy(RECORDS[0])
    for number, key in enumerate(record["tiers"].values(), start=41):
        outcome = record["models"][key]
        outcome.update(pred=str(number), response=f'Worked out. {{"answer": "{number}"}}')
    data = write_dataset(tmp_path / "split.jsonl.gz", [record])
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    log = team_log(tmp_path / "one.jsonl", [{"query": record["prompt"]}])
    await cli(settings, "import", "--db", url, str(log), "--quiet")
    await cli(settings, "label", "--db", url, "--sample", "1", "--method", method, "--quiet")
    _, _, labels = await stored(url)
    assert {lab.tier: lab.verdict for lab in labels if lab.tier in expected} == expected
    assert all(lab.judge_tier == "consensus" for lab in labels if lab.tier in expected)
