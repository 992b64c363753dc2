"""`tierroute route` and `tierroute cascade` as a user runs them against a running server."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running, make_settings, running_server
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.testing import StaticScorer

RECORDS = cascade_records()


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
        str(labelled(RECORDS, "mid")["prompt"]),
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


async def test_cli_cascade_stream_prints_the_answer_as_it_arrives() -> None:
    """`tierroute cascade --stream` prints text while the answer is still being written."""
    hold = asyncio.Event()
    provider = ScriptedProvider(
        answers={"claude-haiku-4-5": [Reply.answer("Paris is the capital.", mid_gate=hold)]}
    )
    scorer = StaticScorer((0.95, 0.03, 0.02))
    async with running_server(make_settings(), scorer=scorer, provider=provider) as served:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tierroute",
            "--log-level",
            "WARNING",
            "cascade",
            "--stream",
            "--judge",
            "never",
            "--target",
            f"127.0.0.1:{served.port}",
            "What is the capital of France?",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        first = await proc.stdout.readexactly(len("Paris "))
        # The provider holds the rest of the answer: the command is still waiting for it.
        assert proc.returncode is None
        hold.set()
        rest, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    out = (first + rest).decode()
    assert out.startswith("Paris is the capital.\n")
    assert "answered by cheap" in out
    assert "[1. answer on cheap started]" in err.decode()


async def test_cli_cascade_stream_json_prints_one_object_per_event(served: Running) -> None:
    """`--stream --json` prints one JSON object per event, the result last."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tierroute",
        "--log-level",
        "WARNING",
        "cascade",
        "--stream",
        "--json",
        "--judge",
        "always",
        "--target",
        f"127.0.0.1:{served.port}",
        str(labelled(RECORDS, "mid")["prompt"]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events[0]["type"] == "HopStarted"
    assert events[-1]["type"] == "Final"
    text = "".join(e["text"] for e in events if e["type"] == "TextDelta")
    assert text == events[-1]["result"]["answer"]
    assert "Retract" not in {e["type"] for e in events}


async def test_a_reader_that_stops_early_ends_the_command_quietly(served: Running) -> None:
    """`tierroute cascade --stream --json | head -1`: the closed pipe ends the command with
    exit 0 and no traceback."""
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tierroute",
        "--log-level",
        "WARNING",
        "cascade",
        "--stream",
        "--json",
        "--judge",
        "always",
        "--target",
        f"127.0.0.1:{served.port}",
        str(labelled(RECORDS, "mid")["prompt"]),
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    # Read the first line, as `head -1` would, then go away.
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.to_thread(reader.readline)
    _, err = await proc.communicate()
    assert json.loads(first)["type"] == "HopStarted"
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
