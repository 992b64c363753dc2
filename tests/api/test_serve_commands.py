"""The server-side commands as a user runs them: `serve` (start-up failures, a clean stop),
`replay-server` (serves until SIGTERM) and `hash-token`."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures import make_records, write_dataset
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.api.serve_commands import add_replay_parser, add_token_parser, run_replay_server
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

ACME_TOKEN = "acme-token-5b1f0c"
RECORDS = make_records(40, claude=True)
BUNDLE = Path(__file__).resolve().parents[2] / "model_export" / "bundle"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    env.update(
        TIERROUTE_DATA="/nonexistent/tierroute-test-data",
        TIERROUTE_QUERYLOG_ENABLED="false",
        TIERROUTE_HTTP_PORT="0",
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
        _stop_cleanly(proc)
    finally:
        _kill_if_running(proc)


def _stop_cleanly(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def _kill_if_running(proc: subprocess.Popen[str]) -> None:
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


def test_cli_registers_replay_server() -> None:
    """`replay-server` parses its options and dispatches to run_replay_server."""
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["replay-server", "--port", "0", "--time-scale", "0", "--trio", "claude"]
    )
    assert args.func is run_replay_server
    assert (args.port, args.time_scale, args.trio) == (0, 0.0, "claude")


def test_replay_server_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`replay-server` prints its URL, answers requests and exits 0 on SIGTERM."""
    data = write_dataset(tmp_path / "d.jsonl.gz", RECORDS[:3])
    argv = [sys.executable, "-m", "tierroute", "replay-server", "--data", str(data), "--port", "0"]
    env = {**os.environ, "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        with urllib.request.urlopen(f"{url}/healthz", timeout=30) as response:  # noqa: S310
            health = json.load(response)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert url.startswith("http://127.0.0.1:")
    assert health == {"status": "ok"}


def test_hash_token_command_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute hash-token` prints the digest of the token on standard input."""
    parser = argparse.ArgumentParser()
    add_token_parser(parser.add_subparsers())
    args = parser.parse_args(["hash-token"])
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{ACME_TOKEN}\n"))
    assert args.func(args, Settings.from_env({}), {}) == 0
    assert capsys.readouterr().out.strip() == hash_token(ACME_TOKEN)


def test_hash_token_command_generates_a_new_token(capsys: pytest.CaptureFixture[str]) -> None:
    """`tierroute hash-token --new` prints a fresh random token and its matching digest."""
    parser = argparse.ArgumentParser()
    add_token_parser(parser.add_subparsers())
    args = parser.parse_args(["hash-token", "--new"])
    assert args.func(args, Settings.from_env({}), {}) == 0
    token_line, digest_line = capsys.readouterr().out.splitlines()
    token = token_line.split()[1]
    assert len(token) >= 40
    assert digest_line.split()[1] == hash_token(token)


def _in_read_only_dir(folder: Path, argv: list[str]) -> list[str] | None:
    """`argv` run with a read-only working directory `folder`: its permission bits for a
    user, a read-only tmpfs in a private mount namespace for root (None: cannot be made)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return argv
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None
    script = 'mount -t tmpfs -o ro none "$0" && cd "$0" && exec "$@"'
    return [unshare, "-m", "--propagation", "private", "sh", "-c", script, str(folder), *argv]


def test_a_read_only_working_directory_fails_start_up_in_one_line(tmp_path: Path) -> None:
    """`serve` in a read-only working directory (the image's filesystem mounted read-only)
    ends with exit 2 and one line naming the query-log spool and the setting to change."""
    folder = tmp_path / "ro"
    folder.mkdir()
    argv = _in_read_only_dir(folder, [sys.executable, "-m", "tierroute", "serve", "--port", "0"])
    if argv is None:
        pytest.skip("no way to make a read-only directory here")
    env = {**_env(TIERROUTE_MODEL_DIR=str(BUNDLE)), "TIERROUTE_QUERYLOG_ENABLED": "true"}
    done = subprocess.run(
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    folder.chmod(0o755)
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(errors) == 1, errors
    assert "tierroute-querylog.spool.jsonl" in errors[0]
    assert "querylog.spool_path (TIERROUTE_QUERYLOG_SPOOL_PATH)" in errors[0]


def test_sighup_reloads_the_tokens_file_of_a_running_server(tmp_path: Path) -> None:
    """`serve` reloads its tokens file on SIGHUP: a token added to the file is served."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tenants]\nacme = ["{hash_token(ACME_TOKEN)}"]\n')
    port = _free_port()
    env = _env(
        TIERROUTE_AUTH_TOKENS_FILE=str(tokens),
        TIERROUTE_TENANCY_RELOAD_POLL_S="0",
        TIERROUTE_REPLAY_TIME_SCALE="0",
    )
    with _serve(env, port) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            assert f":{port}" in proc.stdout.readline()
            tokens.write_text(
                f'[tenants]\nacme = ["{hash_token(ACME_TOKEN)}", "{hash_token("second")}"]\n'
            )
            proc.send_signal(signal.SIGHUP)
            # The server logs the reload: wait for that line rather than for a time.
            for line in proc.stderr:
                if "auth.tokens_file reloaded" in line:
                    break
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = pb_grpc.TierRouterStub(channel).Route(
                    pb.RouteRequest(query="What is 2+2?", strategy=pb.STRATEGY_HEURISTIC),
                    metadata=bearer_metadata("second"),
                    timeout=10,
                )
            assert reply.tier.name
            _stop_cleanly(proc)
        finally:
            _kill_if_running(proc)
