"""`tierroute route` and `tierroute cascade` as a user runs them against a running server."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.fixtures import cascade_records, labelled
from tests.helpers import Running

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
