"""Two replicas behind one client share one PostgreSQL query log; one replica stops mid-run.

The client balances per call (round_robin over both addresses) and retries Route, which is
idempotent, through the gRPC service config. Stopping a replica gracefully loses no call,
and every call that succeeded is in the shared log exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tierroute_client import RetryPolicy, TierRouteClient, TierRouteClientError

from tests.helpers import postgres_or_skip
from tierroute.querylog import open_store
from tierroute.querylog.doubles import temporary_schema

CALLS = 400
STOP_AFTER = 120


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL (a failure under CI when it is unreachable)."""
    url = postgres_or_skip()
    with temporary_schema(url) as schema_url:
        yield schema_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _replica(pg_url: str, tmp_path: Path, name: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_DB_URL=pg_url,
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(tmp_path / f"{name}.spool.jsonl"),
        TIERROUTE_QUERYLOG_FLUSH_INTERVAL_S="0.05",
        TIERROUTE_DATA="/nonexistent/tierroute-test-data",
        TIERROUTE_SERVER_GRACE_PERIOD_S="10",
        # Replicas share the machine: the HTTP endpoint's fixed port would collide.
        TIERROUTE_HTTP_PORT="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierroute", "--log-level", "WARNING", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the replica is SERVING
    assert f":{port}" in line, proc.stderr.read() if proc.stderr else line
    return proc


def test_replica_stopped_mid_run_loses_no_call(pg_url: str, tmp_path: Path) -> None:
    """Stopping one of two replicas mid-run loses no call; each call is logged exactly once."""
    ports = [_free_port(), _free_port()]
    replicas = [_replica(pg_url, tmp_path, f"r{i}", p) for i, p in enumerate(ports)]
    ok: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    try:
        client = TierRouteClient(
            [f"127.0.0.1:{p}" for p in ports],
            deadline_s=30,
            retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.05, max_backoff_s=0.5),
        )

        def call(i: int) -> None:
            request_id = f"scale-{i}-{uuid.uuid4().hex[:8]}"
            try:
                client.route(f"Question {i}: what is {i} plus {i}?", request_id=request_id)
            except TierRouteClientError as exc:
                with lock:
                    failed.append(f"{request_id}: {exc.code}")
                return
            with lock:
                ok.append(request_id)
                if len(ok) >= STOP_AFTER:
                    enough.set()

        with client, ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(call, i) for i in range(CALLS)]
            assert enough.wait(120)
            replicas[0].send_signal(signal.SIGTERM)  # mid-run, calls in flight on both
            for f in futures:
                f.result()
        _, err = replicas[0].communicate(timeout=60)
        assert replicas[0].returncode == 0, err
    finally:
        for proc in replicas:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
    assert failed == []
    assert len(ok) == CALLS

    async def logged() -> list[str]:
        store = open_store(pg_url)
        try:
            return [r.request_id for r in await store.fetch_queries()]
        finally:
            await store.aclose()

    ids = asyncio.run(logged())
    assert sorted(ids) == sorted(ok)  # every call once: none lost, none twice
