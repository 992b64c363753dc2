"""Graceful shutdown under load: SIGTERM to `tierroute serve` while Cascade calls run.

`tierroute serve` runs as a child process on a free port with its query log on a SQLite
file. Its model backend is a replay server in this process (a local Anthropic API with a
latency model), so the test can see calls in flight there and signal while they are: it
waits on the replay server's counters and on the health Watch stream, never on a sleep.
The scenario runs once for the module; each test checks one promise of it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import make_settings
from tierroute.providers.replay.http_server import ReplayServer
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.querylog import open_store
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

IN_FLIGHT = 12
# Attempts at a new call after NOT_SERVING; the first is normally refused already.
NEW_CALL_TRIES = 20
# Bounds so a broken server fails the test instead of hanging it; not timing assertions.
BOUND_S = 120.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Call:
    """One Cascade call: its request id and the status it ended with."""

    request_id: str
    code: grpc.StatusCode
    details: str


@dataclass(frozen=True)
class Shutdown:
    """What one SIGTERM-under-load run observed."""

    in_flight: list[Call]
    after_signal: list[Call]
    returncode: int
    server_log: str
    logged_ids: list[str]


def _child_env(tmp: Path, replay_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TIERROUTE_", "ANTHROPIC_", "OTEL_"))
    }
    env.update(
        # The Anthropic SDK, pointed at the replay server this test runs and watches.
        TIERROUTE_ANTHROPIC_BACKEND="anthropic",
        ANTHROPIC_BASE_URL=replay_url,
        ANTHROPIC_API_KEY="test-key",
        TIERROUTE_DB_URL=f"sqlite:///{tmp / 'querylog.sqlite3'}",
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(tmp / "querylog.spool.jsonl"),
        TIERROUTE_SERVER_GRACE_PERIOD_S="60",
        # No drain delay: new calls must meet a server that has stopped accepting them.
        TIERROUTE_SERVER_DRAIN_DELAY_S="0",
        TIERROUTE_TELEMETRY_MODE="off",
        TIERROUTE_HTTP_PORT="0",
    )
    return env


async def _cascade(stub: pb_grpc.TierRouterStub, request_id: str) -> Call:
    request = pb.CascadeRequest(
        query=f"Shutdown check {request_id}: what is seven times six?",
        request_id=request_id,
        start_tier="cheap",
        judge_mode=pb.JUDGE_MODE_NEVER,
        speculation=pb.SPECULATION_MODE_OFF,
    )
    try:
        await stub.Cascade(request, timeout=BOUND_S)
    except aio.AioRpcError as err:
        return Call(request_id, err.code(), err.details() or "")
    return Call(request_id, grpc.StatusCode.OK, "")


async def _until_not_serving(watch: Any) -> None:
    while True:
        reply = await asyncio.wait_for(watch.read(), BOUND_S)
        assert reply is not aio.EOF, "the health stream ended before NOT_SERVING"
        if reply.status == NOT_SERVING:
            return


async def _scenario(tmp: Path, replay: ReplayServer) -> Shutdown:
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tierroute",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            # One server process: the group's SIGTERM is tests/system/test_workers.py's.
            "--workers",
            "1",
            env=_child_env(tmp, replay.base_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), BOUND_S)).decode()
        found = re.search(r":(\d+)\s*$", line)
        assert found, f"serve did not start: {line!r}\n{log_path.read_text()}"
        async with aio.insecure_channel(f"127.0.0.1:{found.group(1)}") as channel:
            stub = pb_grpc.TierRouterStub(channel)
            watch: Any = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            first = await asyncio.wait_for(watch.read(), BOUND_S)
            assert first.status == SERVING
            calls = [
                asyncio.create_task(_cascade(stub, f"in-flight-{i}")) for i in range(IN_FLIGHT)
            ]
            in_flight = await asyncio.to_thread(
                replay.wait_for, lambda s: s.in_flight >= IN_FLIGHT, BOUND_S
            )
            assert in_flight, "the calls never reached the model backend"
            proc.send_signal(signal.SIGTERM)
            await _until_not_serving(watch)
            # An open Watch is a call in flight too: end it, or the drain waits for it.
            watch.cancel()
            after: list[Call] = []
            for i in range(NEW_CALL_TRIES):
                after.append(await _cascade(stub, f"after-signal-{i}"))
                if after[-1].code != grpc.StatusCode.OK:
                    break
            finished = await asyncio.wait_for(asyncio.gather(*calls), BOUND_S)
        returncode = await asyncio.wait_for(proc.wait(), BOUND_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    store = open_store(_child_env(tmp, "")["TIERROUTE_DB_URL"])
    try:
        logged = [r.request_id for r in await store.fetch_queries(kind="cascade")]
    finally:
        await store.aclose()
    return Shutdown(list(finished), after, returncode, log_path.read_text(), logged)


@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shutdown]:
    """One run: calls in flight at the replay server, SIGTERM, new calls, exit, the log."""
    tmp = tmp_path_factory.mktemp("shutdown")
    settings = make_settings(
        {
            # Every reply takes about three seconds, so the calls are still in flight when
            # the signal lands; the grace period (60 s) leaves them ample time to finish.
            "TIERROUTE_REPLAY_TIME_SCALE": "1",
            "TIERROUTE_REPLAY_TTFT_S": "3,3,3",
        }
    )
    with ReplayServer(ReplayStore(), settings.tiers, settings.replay) as replay:
        yield asyncio.run(_scenario(tmp, replay))


def test_calls_in_flight_at_sigterm_finish_ok(shutdown: Shutdown) -> None:
    """Every call in flight when SIGTERM arrived completes with OK within the grace period."""
    assert [c.code for c in shutdown.in_flight] == [grpc.StatusCode.OK] * IN_FLIGHT


def test_new_calls_after_sigterm_are_refused_unavailable(shutdown: Shutdown) -> None:
    """Once the server reports NOT_SERVING, a new call is refused with UNAVAILABLE."""
    codes = [c.code for c in shutdown.after_signal]
    # A call that slipped in before the listener closed is served, never half-handled.
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert codes[-1] == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in shutdown.after_signal[-1].details


def test_server_exits_zero_without_a_traceback(shutdown: Shutdown) -> None:
    """After draining, `tierroute serve` exits 0 and logs no traceback."""
    assert shutdown.returncode == 0, shutdown.server_log
    assert "Traceback" not in shutdown.server_log


def test_every_ok_call_is_logged_exactly_once(shutdown: Shutdown) -> None:
    """Each call that got OK is in the SQLite query log once; nothing else is."""
    ok = [
        c.request_id
        for c in [*shutdown.in_flight, *shutdown.after_signal]
        if c.code == grpc.StatusCode.OK
    ]
    counts = Counter(shutdown.logged_ids)
    assert sorted(counts) == sorted(ok)
    assert set(counts.values()) == {1}
