"""`tierroute serve --workers 2`: two server processes on one port and one query-log writer,
run as real processes: calls spread over both, a reload through one reaches both, a dead
worker is replaced, and SIGTERM drains everything into the log once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import make_variant, stored_ids
from tierroute.api.security import hash_token
from tierroute.settings import RoutingConfig
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

BUNDLE = RoutingConfig().model_dir
ADMIN_TOKEN = "admin-token-workers"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
BOUND_S = 90.0
SERVING = health_pb2.HealthCheckResponse.SERVING


def _copy_bundle(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _variant(version: str, dest: Path) -> Path:
    """A loadable copy of the shipped bundle calling itself `version` (value model too)."""
    make_variant(BUNDLE, version, dest)
    for name in ("value.onnx", "value_calibration.npz"):
        if (BUNDLE / name).exists():
            shutil.copyfile(BUNDLE / name, dest / name)
    return dest


def _env(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {}, "admin": [hash_token(ADMIN_TOKEN)]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_DATA="/nonexistent/tierroute-test-data",
        TIERROUTE_MODEL_DIR=str(model_dir),
        TIERROUTE_AUTH_TOKENS_FILE=str(tokens),
        TIERROUTE_DB_URL=f"sqlite:///{tmp_path / 'querylog.sqlite3'}",
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(tmp_path / "querylog.spool.jsonl"),
        TIERROUTE_SERVER_DRAIN_DELAY_S="0",
        # The HTTP endpoint off unless a test asks for it (`--http-port 0`): no fixed port.
        TIERROUTE_HTTP_PORT="0",
    )
    return env


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """`serve --workers 2` on a copy of the shipped bundle: (process, port, its stderr file)."""
    model_dir = _copy_bundle(BUNDLE, tmp_path / "model")
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierroute", "serve", "--port", "0", "--workers", "2"],
            env=_env(tmp_path, model_dir),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r":(\d+)$", line.strip())
        assert found, f"serve did not start: {line!r}\n{log.read_text()}"
        yield proc, int(found.group(1)), log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def _fresh(port: int) -> grpc.Channel:
    # A local subchannel pool: a new TCP connection per channel, so the kernel picks a worker.
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _route(port: int, request_id: str = "") -> pb.RouteResponse:
    with _fresh(port) as channel:
        response: pb.RouteResponse = pb_grpc.TierRouterStub(channel).Route(
            pb.RouteRequest(query="What is the capital of France?", request_id=request_id),
            metadata=ADMIN,
            timeout=30,
        )
        return response


def _versions(port: int, connections: int = 16) -> set[str]:
    return {_route(port).model_version for _ in range(connections)}


def _until(predicate: object, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"not within {BOUND_S} s: {what}")


def _worker_pids(log: Path) -> dict[int, int]:
    started = re.findall(r"worker (\d+) started \(pid (\d+)\)", log.read_text())
    return {int(slot): int(pid) for slot, pid in started}


def _health(port: int, service: str = "") -> int:
    with _fresh(port) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        status: int = reply.status
        return status


def test_a_reload_through_one_worker_reaches_every_worker(
    group: tuple[subprocess.Popen[str], int, Path], tmp_path: Path
) -> None:
    """ReloadModel lands on one worker; soon every connection is served by the new model,
    and RollbackModel through one worker brings every worker back."""
    _, port, _ = group
    first = _versions(port)
    assert len(first) == 1
    model_dir = tmp_path / "model"
    shutil.rmtree(model_dir)
    _variant("v-workers-2", model_dir)
    with _fresh(port) as channel:
        stub = pb_grpc.TierRouterStub(channel)
        reload = stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN, timeout=60)
        assert reload.version == "v-workers-2"
        _until(lambda: _versions(port) == {"v-workers-2"}, "every worker serves v-workers-2")
        back = stub.RollbackModel(pb.RollbackModelRequest(), metadata=ADMIN, timeout=60)
        assert back.version == first.pop()
    _until(lambda: _versions(port) == {back.version}, "every worker rolled back")


def test_a_killed_worker_is_replaced_and_the_group_serves_again(
    group: tuple[subprocess.Popen[str], int, Path],
) -> None:
    """SIGKILL of one worker: the supervisor starts it again and health is SERVING again."""
    _, port, log = group
    _until(lambda: _health(port) == SERVING, "the group reports SERVING")
    killed = _worker_pids(log)[0]
    os.kill(killed, signal.SIGKILL)
    _until(lambda: _worker_pids(log).get(0) not in (None, killed), "worker 0 started again")
    _until(
        lambda: (
            all(_health(port, f"tierroute.v1.TierRouter/worker/{s}") == SERVING for s in (0, 1))
            and _health(port) == SERVING
        ),
        "both workers SERVING again",
    )
    assert _route(port).model_version


async def test_sigterm_drains_every_worker_into_one_log(
    group: tuple[subprocess.Popen[str], int, Path], tmp_path: Path
) -> None:
    """Calls spread over both workers; after SIGTERM every call is logged exactly once."""
    proc, port, log = group
    ids = [f"drain-{i}" for i in range(40)]
    for request_id in ids:
        _route(port, request_id)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(BOUND_S) == 0
    submitted = [
        int(n) for n in re.findall(r"client closed: ClientStats\(submitted=(\d+)", log.read_text())
    ]
    assert len(submitted) == 2, log.read_text()[-2000:]
    assert min(submitted) > 0, submitted
    assert sorted(await stored_ids(tmp_path / "querylog.sqlite3")) == sorted(ids)


def test_the_workers_share_one_http_port(tmp_path: Path) -> None:
    """`serve --workers 2 --http-port 0`: the group reserves one HTTP port, both workers
    listen on it (SO_REUSEPORT) and it answers the Messages API's model list."""
    import urllib.request

    model_dir = _copy_bundle(BUNDLE, tmp_path / "model")
    command = [sys.executable, "-m", "tierroute", "serve", "--port", "0", "--workers", "2"]
    with (tmp_path / "serve.log").open("w") as err:
        proc = subprocess.Popen(
            [*command, "--http-port", "0"],
            env=_env(tmp_path, model_dir),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        http_line, grpc_line = proc.stdout.readline(), proc.stdout.readline()
        log = (tmp_path / "serve.log").read_text()
        assert "serving HTTP on" in http_line, f"{http_line!r}\n{log}"
        http_port = int(http_line.strip().rsplit(":", 1)[1])
        assert "serving on" in grpc_line
        for _ in range(8):
            # A new connection each time, so the kernel may hand it to either worker.
            asked = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/v1/models", headers={"x-api-key": ADMIN_TOKEN}
            )
            with urllib.request.urlopen(asked, timeout=30) as answer:  # noqa: S310 (http only)
                listed = json.loads(answer.read())
            assert any(m["id"] == "tierroute" for m in listed["data"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close() if proc.stdout is not None else None
