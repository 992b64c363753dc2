"""The `tierroute` command as a user runs it: start-up failures and a clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BUNDLE = Path(__file__).resolve().parents[1] / "model_export" / "bundle"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_DATA="/nonexistent/tierroute-test-data",
        TIERROUTE_QUERYLOG_ENABLED="false",
        **extra,
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierroute", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_missing_model_fails_start_up_naming_the_file(tmp_path: Path) -> None:
    """A model directory without a model makes `serve` exit non-zero, naming the file."""
    proc = _serve(_env(TIERROUTE_MODEL_DIR=str(tmp_path)), _free_port())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert str(tmp_path) in err
    assert "Traceback" not in err


def test_corrupt_model_fails_start_up_naming_the_file(tmp_path: Path) -> None:
    """A corrupt model.onnx makes `serve` exit non-zero, naming that file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "model.onnx").write_bytes(b"not a model")
    proc = _serve(_env(TIERROUTE_MODEL_DIR=str(bundle)), _free_port())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "model.onnx" in err
    assert "Traceback" not in err


def test_serve_reports_serving_then_stops_cleanly_on_sigint() -> None:
    """`serve` answers health checks with SERVING and exits 0 on SIGINT."""
    port = _free_port()
    with _serve(_env(TIERROUTE_REPLAY_TIME_SCALE="0"), port) as proc:
        _check_serving_then_stop(proc, port)


def _check_serving_then_stop(proc: subprocess.Popen[str], port: int) -> None:
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server is SERVING
        assert f":{port}" in line
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_port_in_use_fails_start_up_with_a_clear_message() -> None:
    """A port another process holds makes `serve` exit non-zero with a readable reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(_env(), port)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
