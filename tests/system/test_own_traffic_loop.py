"""The whole own-traffic loop through the commands, on a dev sample with no ground truth:
import -> label (replay) -> export -> train -> calibrate -> eval -> promote -> hot reload."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import running_server
from tierroute.__main__ import main
from tierroute.api.security import hash_token
from tierroute.model.registry import ModelRegistry, bundle_version
from tierroute.outcomes import iter_records
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb

SAMPLE = 120
TRUTH = ("reference_answer", "min_tier_correct")
ADMIN_TOKEN = "admin-token-own-traffic"


def _dev_sample(real_data: Path, n: int) -> list[dict[str, Any]]:
    """`n` dev records across the tasks, with every ground-truth field removed."""
    rng = random.Random(14)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in iter_records(real_data):
        by_task.setdefault(record["task"], []).append(record)
    picked = []
    for task in sorted(by_task):
        picked += rng.sample(by_task[task], n // len(by_task))
    for record in picked:
        for key in TRUTH:
            record.pop(key, None)
        for outcome in record["models"].values():
            outcome.pop("correct", None)
    return picked


def _tierroute(argv: list[str], environ: Mapping[str, str], capsys: Any) -> Any:
    """Run one `tierroute` command in-process; its --json output, parsed."""
    code = main(["--log-level", "WARNING", *argv], environ)
    out = capsys.readouterr().out
    assert code == 0, f"tierroute {argv[0]} exited {code}"
    return json.loads(out) if "--json" in argv else out


async def test_own_traffic_loop_from_import_to_hot_reload(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log with no ground truth becomes a served model: every step is a tierroute command."""
    records = _dev_sample(real_data, SAMPLE)
    replay = tmp_path / "replay.jsonl.gz"
    with gzip.open(replay, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    log_file = tmp_path / "team-log.jsonl"
    log_file.write_text(
        "".join(
            json.dumps({"query": r.get("prompt_sent") or r["prompt"], "timestamp": i}) + "\n"
            for i, r in enumerate(records)
        ),
        encoding="utf-8",
    )
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {}, "admin": [hash_token(ADMIN_TOKEN)]}))
    environ = {
        "TIERROUTE_REPLAY_DATA": str(replay),
        "TIERROUTE_DATA": str(replay),
        "TIERROUTE_REPLAY_TIME_SCALE": "0",
        "TIERROUTE_QUERYLOG_ENABLED": "false",
        "TIERROUTE_AUTH_TOKENS_FILE": str(tokens),
        "TIERROUTE_ROUTING_REGISTRY_DIR": str(tmp_path / "models"),
        # The server below serves no HTTP: no fixed port.
        "TIERROUTE_HTTP_PORT": "0",
    }
    db = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    run = asyncio.to_thread

    imported = await run(
        _tierroute, ["import", "--db", db, str(log_file), "--json"], environ, capsys
    )
    assert imported["queries_written"] == SAMPLE
    labelled = await run(
        _tierroute, ["label", "--db", db, "--sample", str(SAMPLE), "--json"], environ, capsys
    )
    assert labelled["questions_fully_labelled"] == SAMPLE
    export = tmp_path / "labels.jsonl.gz"
    summary = await run(
        _tierroute, ["export", "--db", db, "--labeled", "--out", str(export), "--json"],
        environ, capsys,
    )  # fmt: skip
    assert summary["records"] == SAMPLE
    bundle = tmp_path / "bundle"
    await run(
        _tierroute,
        ["train", "--data", str(export), "--out", str(bundle), "--folds", "2", "--no-compare",
         "--quiet"],
        environ, capsys,
    )  # fmt: skip
    await run(
        _tierroute,
        ["calibrate", "--data", str(export), "--model-dir", str(bundle), "--policy",
         "thresholds", "--max-cost-per-query", "0.5x", "--folds", "2", "--out",
         str(bundle / "thresholds.json"), "--quiet"],
        environ, capsys,
    )  # fmt: skip
    await run(
        _tierroute,
        ["eval", "--data", str(export), "--model-dir", str(bundle), "--folds", "2", "--out",
         str(tmp_path / "eval"), "--quiet"],
        environ, capsys,
    )  # fmt: skip
    report = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert report["strategies"]
    version = bundle_version(bundle)
    registry = ModelRegistry(tmp_path / "models", seed=Settings.from_env({}).routing.model_dir)
    served_before = registry.promoted()
    assert served_before != version

    async with running_server(Settings.from_env(environ), environ=environ) as running:
        await run(
            _tierroute,
            ["models", "--registry", str(registry.root), "--add", str(bundle), "--promote",
             version],
            environ, capsys,
        )  # fmt: skip
        admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        swap = await running.stub.ReloadModel(pb.ReloadModelRequest(), metadata=admin, timeout=60)
        assert (swap.previous_version, swap.version) == (served_before, version)
        routed = await running.stub.Route(
            pb.RouteRequest(query=records[0]["prompt"]), metadata=admin, timeout=30
        )
        assert routed.model_version == version
