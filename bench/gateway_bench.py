"""tierroute's Messages API door against LiteLLM's proxy and against no gateway, in one run.

The upstream is a fake Anthropic API that is not what is measured: nginx (from Debian)
answers every `POST /v1/messages` at once with a fixed Message on one port and with a fixed
SSE stream on another. Load comes from wrk (from Debian; C, microsecond histograms), and
time to first token from a small stdlib client of this script. The gateway runs alone on
core 0, nginx and the load on core 1 (`taskset`), each gateway with one worker:

- `direct`: wrk straight at nginx, the floor;
- `tierroute pinned`: `tierroute serve --workers 1` with the Anthropic backend pointed at
  nginx, the request naming the cheap tier's model id (one upstream call, query log on,
  its writer process included);
- `tierroute routed`: the same server, `model: "tierroute"` (the classifier's routing plus
  the Cascade's first call; judging and speculation off so that it is one call);
- `litellm`: LiteLLM's proxy at a pinned version in a virtualenv of its own, made here on
  the first run (`.venv/litellm-<version>`), its `/v1/messages` on the same upstream, and
  its `/v1/chat/completions` with the same body (`litellm chat completions`).

Per gateway: sequential latency (one client, kept-alive) and what it adds over direct;
requests per second at 16 and 64 clients with p50 and p99; CPU per request of the gateway's
whole process tree during the 16-client measure; peak resident memory (VmHWM summed over
the tree); time to first token of a streamed request, sequential, against direct; and the
upstream calls per request that nginx counted (stub_status).

    .venv/bin/python bench/gateway_bench.py [--seconds 8] [--ttft-requests 300] [--json]

`make bench-gateway` installs nginx and wrk when missing (apt-get; root) and runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timing import print_result, process_cpu_s

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / ".venv" / f"litellm-{LITELLM_VERSION}"
GATEWAY_CORE, LOAD_CORE = "0", "1"
PINNED_MODEL = "claude-haiku-4-5"
# LiteLLM's name for the same model on the streaming upstream (one proxy serves both).
LITELLM_STREAM_MODEL = "claude-haiku-4-5-sse"
QUESTION = "What is the capital of France?"
API_KEY = "bench-key"
MESSAGES = "/v1/messages"
MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": PINNED_MODEL,
    "content": [{"type": "text", "text": "Paris is the capital of France."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 14, "output_tokens": 8},
}
_STREAM_START = {**MESSAGE, "content": [], "stop_reason": None}
STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": _STREAM_START}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Paris"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " is the capital of France."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 8},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": API_KEY,
}


def _body(model: str, *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _nginx_string(text: str) -> str:
    if "$" in text:
        raise ValueError("nginx would read '$' as a variable")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _wait_http(url: str, seconds: float, proc: subprocess.Popen[Any], what: str) -> None:
    """Poll `url` until it answers 2xx; exit with one line if `proc` dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it served")
        with contextlib.suppress(OSError):
            # S310: `url` is always an http:// URL on loopback, made by this script.
            response = urllib.request.urlopen(url, timeout=2)  # noqa: S310
            with response:
                if response.status < 300:
                    return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {seconds:.0f} s")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with (
                    contextlib.suppress(OSError),
                    open(f"/proc/{current}/task/{task}/children") as kids,
                ):
                    todo.extend(int(k) for k in kids.read().split())
    return found


def _tree_cpu_s(pid: int) -> float:
    return sum(process_cpu_s(p) for p in _tree(pid))


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) summed over `pid`'s process tree, MiB."""
    total_kib = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


class Upstream:
    """nginx on the load core: the fixed Message on `port`, the SSE stream on `stream_port`."""

    def __init__(self, scratch: Path) -> None:
        self.port, self.stream_port, self.status_port = _free_port(), _free_port(), _free_port()
        sse = "".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in STREAM_EVENTS
        )
        conf = scratch / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
master_process off;
daemon off;
pid {scratch}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {scratch}/nginx-body;
    server {{
        listen 127.0.0.1:{self.port} reuseport;
        location = /v1/messages {{ default_type application/json;
            return 200 {_nginx_string(json.dumps(MESSAGE))}; }}
    }}
    server {{
        listen 127.0.0.1:{self.stream_port};
        location = /v1/messages {{ default_type text/event-stream;
            return 200 {_nginx_string(sse)}; }}
    }}
    server {{
        listen 127.0.0.1:{self.status_port};
        location = /status {{ stub_status; }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, "nginx", "-p", str(scratch), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
        )
        _wait_http(f"http://127.0.0.1:{self.status_port}/status", 15, self.proc, "nginx")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.stream_port}"

    def requests(self) -> int:
        """Requests nginx has answered so far, this status request included."""
        url = f"http://127.0.0.1:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return int(text.splitlines()[2].split()[2])

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Gateway:
    """A started gateway: its process (the root of its tree) and its base URL."""

    name: str
    proc: subprocess.Popen[Any]
    url: str

    def stop(self) -> None:
        _stop(self.proc)


def start_tierroute(scratch: Path, upstream_url: str, tag: str) -> Gateway:
    """`tierroute serve --workers 1` on the gateway core, its backend pointed at nginx."""
    env = {
        **os.environ,
        "TIERROUTE_ANTHROPIC_BACKEND": "anthropic",
        "TIERROUTE_ANTHROPIC_API_KEY": API_KEY,
        "TIERROUTE_ANTHROPIC_BASE_URL": upstream_url,
        "TIERROUTE_QUERYLOG_ENABLED": "true",
        "TIERROUTE_DB_URL": f"sqlite:///{scratch}/{tag}.sqlite3",
        "TIERROUTE_QUERYLOG_SPOOL_PATH": f"{scratch}/{tag}.spool.jsonl",
        # `model: "tierroute"` is routing plus one call: nothing judged or run ahead.
        "TIERROUTE_CASCADE_USE_MODEL_CALIBRATION": "false",
        "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0",
        "TIERROUTE_CASCADE_SPECULATIVE_BOUND": "0",
        "TIERROUTE_SERVER_DRAIN_DELAY_S": "0",
    }
    # As shipped (log level INFO), its log in the scratch directory.
    log = (scratch / f"tierroute-{tag}.log").open("w")
    proc = subprocess.Popen(
        ["taskset", "-c", GATEWAY_CORE, sys.executable, "-m", "tierroute", "serve",
         "--workers", "1", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    http_port = None
    for line in proc.stdout:
        found = re.search(r"serving HTTP on \S+:(\d+)", line)
        if found:
            http_port = int(found.group(1))
        if re.search(r"serving on \S+:\d+", line):
            break
    if http_port is None:
        _stop(proc)
        raise SystemExit(f"tierroute serve did not report its HTTP port (log: {log.name})")
    # Nothing reads the rest of its output; it only prints at start-up.
    return Gateway("tierroute", proc, f"http://127.0.0.1:{http_port}")


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own virtualenv (made on the first run); its `litellm` command."""
    command = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".installed"
    if not stamp.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} in {LITELLM_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet",
             f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )  # fmt: skip
        stamp.touch()
    return command


def start_litellm(scratch: Path, upstream: Upstream) -> Gateway:
    """LiteLLM's proxy, one worker, on the gateway core: the pinned model on the Message
    upstream and LITELLM_STREAM_MODEL on the streaming one."""
    command = ensure_litellm()
    port = _free_port()
    models = [(PINNED_MODEL, upstream.url), (LITELLM_STREAM_MODEL, upstream.stream_url)]
    entries = "".join(
        f"  - model_name: {name}\n"
        f"    litellm_params:\n"
        f"      model: anthropic/{PINNED_MODEL}\n"
        f"      api_base: {url}\n"
        f"      api_key: {API_KEY}\n"
        for name, url in models
    )
    config = scratch / "litellm.yaml"
    config.write_text(f"model_list:\n{entries}litellm_settings:\n  telemetry: false\n")
    env = {
        **os.environ,
        # The bundled price map instead of a download at start-up.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        # No keys on either side: tierroute's door runs without a tokens file here, and
        # LiteLLM refuses to start without a master key unless told this is local.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    env.pop("DATABASE_URL", None)
    log = (scratch / "litellm.log").open("w")
    proc = subprocess.Popen(
        ["taskset", "-c", GATEWAY_CORE, str(command), "--config", str(config), "--host",
         "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=scratch,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health/liveliness", 180, proc, f"litellm (log: {log.name})")
    except SystemExit:
        _stop(proc)
        raise
    return Gateway("litellm", proc, url)


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk measure: requests per second and latency percentiles in microseconds."""

    requests: int
    rps: float
    p50_us: float
    p99_us: float


def wrk(url: str, body: bytes, clients: int, seconds: float, scratch: Path) -> Load:
    """wrk on the load core: `clients` kept-alive connections posting to `url` for `seconds`."""
    script = scratch / "wrk.lua"
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items())
    script.write_text(_WRK_SCRIPT.format(body=body.decode(), headers=headers))
    done = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t", "1", "-c", str(clients), "-d",
         f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary["status_errors"] or summary["socket_errors"] or not summary["requests"]:
        raise SystemExit(f"wrk at {url}: errors {summary} (is the gateway answering 200?)")
    return Load(
        requests=summary["requests"],
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_us=float(summary["p50_us"]),
        p99_us=float(summary["p99_us"]),
    )


def _warm(url: str, body: bytes, requests: int) -> None:
    """Sequential requests before any measure: the first ones pay lazy imports and caches."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    try:
        for _ in range(requests):
            conn.request("POST", parts.path, body, HEADERS)
            response = conn.getresponse()
            text = response.read()
            if response.status != 200:
                raise SystemExit(f"{url}: HTTP {response.status} {text[:300]!r}")
    finally:
        conn.close()


def _ttft_child(url: str, body: bytes, requests: int) -> None:
    """Sequential streamed requests on one kept-alive connection; prints microseconds to
    the first text delta, one per line."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    samples = []
    for i in range(requests + 20):
        started = time.perf_counter_ns()
        conn.request("POST", "/v1/messages", body, HEADERS)
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"streamed request to {url}: HTTP {response.status}")
        first = None
        for line in response:
            if first is None and b"content_block_delta" in line:
                first = time.perf_counter_ns() - started
        response.read()  # the end of the body: the connection is ready for the next request
        if first is None:
            raise SystemExit(f"streamed request to {url}: no text delta")
        if i >= 20:  # warm-up
            samples.append(first)
    print("\n".join(str(s // 1000) for s in samples))


def ttft(url: str, body: bytes, requests: int) -> tuple[float, float]:
    """(p50, p99) microseconds to the first text delta, measured from the load core."""
    done = subprocess.run(
        ["taskset", "-c", LOAD_CORE, sys.executable, __file__, "--ttft-child", url,
         "--ttft-body", body.decode(), "--ttft-requests", str(requests)],
        stdout=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    samples = sorted(int(x) for x in done.stdout.split())
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


@dataclass
class Row:
    """What one target measured."""

    seq: Load
    c16: Load | None = None
    c64: Load | None = None
    cpu_us_per_request: float | None = None
    peak_rss_mib: float | None = None
    ttft_us: tuple[float, float] | None = None
    upstream_calls_per_request: float | None = None


@dataclass(frozen=True)
class Plan:
    """What every measure of one run shares: its settings, scratch directory and upstream."""

    seconds: float
    scratch: Path
    upstream: Upstream

    def measure(self, url: str, body: bytes, proc: subprocess.Popen[Any] | None) -> Row:
        """Posting to `url`: sequential, then 16 and 64 clients; the CPU of `proc`'s tree
        at 16 clients."""
        _warm(url, body, 200)
        before = self.upstream.requests()
        seq = wrk(url, body, 1, self.seconds, self.scratch)
        # The status request itself is one of the requests counted.
        upstream_calls = (self.upstream.requests() - before - 1) / seq.requests
        cpu_before = _tree_cpu_s(proc.pid) if proc else 0.0
        c16 = wrk(url, body, 16, self.seconds, self.scratch)
        cpu = (_tree_cpu_s(proc.pid) - cpu_before) * 1e6 / c16.requests if proc else None
        c64 = wrk(url, body, 64, self.seconds, self.scratch)
        return Row(seq, c16, c64, cpu, upstream_calls_per_request=upstream_calls)


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tierroute-gateway-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _require(tools: Sequence[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: `make bench-gateway` installs nginx and wrk (Debian)"
        )


def _with(gateway_factory: Callable[[], Gateway], work: Callable[[Gateway], Any]) -> Any:
    gateway = gateway_factory()
    try:
        return work(gateway)
    finally:
        gateway.stop()


def _ms(us: float) -> float:
    return round(us / 1000, 3)


def _row_json(row: Row, direct: Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq_p50_ms": _ms(row.seq.p50_us),
        "seq_p99_ms": _ms(row.seq.p99_us),
        "added_seq_p50_ms": _ms(row.seq.p50_us - direct.seq.p50_us),
        "added_seq_p99_ms": _ms(row.seq.p99_us - direct.seq.p99_us),
    }
    for key, load in (("c16", row.c16), ("c64", row.c64)):
        if load is not None:
            out[f"{key}_rps"] = round(load.rps, 1)
            out[f"{key}_p50_ms"] = _ms(load.p50_us)
            out[f"{key}_p99_ms"] = _ms(load.p99_us)
    if row.cpu_us_per_request is not None:
        out["cpu_us_per_request"] = round(row.cpu_us_per_request, 1)
    if row.peak_rss_mib is not None:
        out["peak_rss_mib"] = round(row.peak_rss_mib, 1)
    if row.ttft_us is not None:
        out["ttft_p50_ms"] = _ms(row.ttft_us[0])
        out["ttft_p99_ms"] = _ms(row.ttft_us[1])
        if direct.ttft_us is not None:
            out["added_ttft_p50_ms"] = _ms(row.ttft_us[0] - direct.ttft_us[0])
    if row.upstream_calls_per_request is not None:
        out["upstream_calls_per_request"] = round(row.upstream_calls_per_request, 3)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole measurement plan, in one run."""
    _require(["nginx", "wrk", "taskset"])
    rows: dict[str, Row] = {}
    with _scratch() as scratch:
        upstream = Upstream(scratch)
        try:
            plan = Plan(args.seconds, scratch, upstream)
            rows["direct"] = plan.measure(f"{upstream.url}{MESSAGES}", _body(PINNED_MODEL), None)
            rows["direct"].ttft_us = ttft(
                upstream.stream_url, _body(PINNED_MODEL, stream=True), args.ttft_requests
            )

            def tierroute_work(gateway: Gateway) -> None:
                url = f"{gateway.url}{MESSAGES}"
                pinned = plan.measure(url, _body(PINNED_MODEL), gateway.proc)
                routed = plan.measure(url, _body("tierroute"), gateway.proc)
                pinned.peak_rss_mib = routed.peak_rss_mib = _peak_rss_mib(gateway.proc.pid)
                rows["tierroute pinned"], rows["tierroute routed"] = pinned, routed

            _with(lambda: start_tierroute(scratch, upstream.url, "messages"), tierroute_work)

            def tierroute_stream(gateway: Gateway) -> None:
                for name, model in (
                    ("tierroute pinned", PINNED_MODEL),
                    ("tierroute routed", "tierroute"),
                ):
                    rows[name].ttft_us = ttft(
                        gateway.url, _body(model, stream=True), args.ttft_requests
                    )

            _with(lambda: start_tierroute(scratch, upstream.stream_url, "stream"), tierroute_stream)

            if not args.skip_litellm:

                def litellm_work(gateway: Gateway) -> None:
                    body = _body(PINNED_MODEL)
                    row = plan.measure(f"{gateway.url}{MESSAGES}", body, gateway.proc)
                    row.ttft_us = ttft(
                        gateway.url, _body(LITELLM_STREAM_MODEL, stream=True), args.ttft_requests
                    )
                    # Its OpenAI-format door on the same upstream call (the same body parses
                    # as a chat completion), for comparison with its Messages API door.
                    chat = plan.measure(f"{gateway.url}/v1/chat/completions", body, gateway.proc)
                    row.peak_rss_mib = chat.peak_rss_mib = _peak_rss_mib(gateway.proc.pid)
                    rows["litellm"], rows["litellm chat completions"] = row, chat

                _with(lambda: start_litellm(scratch, upstream), litellm_work)
        finally:
            upstream.stop()
    direct = rows["direct"]
    result: dict[str, Any] = {name: _row_json(row, direct) for name, row in rows.items()}
    pinned, routed = rows["tierroute pinned"], rows["tierroute routed"]
    goals: dict[str, Any] = {
        "pinned_adds_at_most_1ms_p50": pinned.seq.p50_us - direct.seq.p50_us <= 1000,
        "routed_adds_at_most_1ms_p50_over_pinned": routed.seq.p50_us - pinned.seq.p50_us <= 1000,
    }
    if "litellm" in rows:
        litellm = rows["litellm"]
        assert pinned.c16 is not None
        assert litellm.c16 is not None
        result["ratios"] = {
            "pinned_c16_rps_over_litellm": round(pinned.c16.rps / litellm.c16.rps, 2),
        }
        goals["pinned_c16_rps_at_least_4x_litellm"] = pinned.c16.rps >= 4 * litellm.c16.rps
        goals["pinned_c16_p99_below_litellm_c16_p50"] = pinned.c16.p99_us < litellm.c16.p50_us
    result["goals"] = goals
    result["seconds_per_measure"] = args.seconds
    result["litellm_version"] = LITELLM_VERSION
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


def _table(result: Mapping[str, Any]) -> str:
    """The result as a Markdown table, one row per target."""
    columns = [
        "seq_p50_ms", "seq_p99_ms", "added_seq_p50_ms", "added_seq_p99_ms", "c16_rps",
        "c16_p50_ms", "c16_p99_ms", "c64_rps", "c64_p50_ms", "c64_p99_ms",
        "cpu_us_per_request", "peak_rss_mib", "ttft_p50_ms", "added_ttft_p50_ms",
        "upstream_calls_per_request",
    ]  # fmt: skip
    lines = ["| target | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in result.items():
        if isinstance(row, dict) and "seq_p50_ms" in row:
            cells = [str(row.get(c, "-")) for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per wrk measure")
    parser.add_argument("--ttft-requests", type=int, default=300)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ttft-child", help=argparse.SUPPRESS)
    parser.add_argument("--ttft-body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ttft_child:
        _ttft_child(args.ttft_child, args.ttft_body.encode(), args.ttft_requests)
        return 0
    # SIGTERM unwinds like an error, so nginx and the gateway started so far are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run(args)
    if args.json:
        print_result(result, as_json=True)
    else:
        print(_table(result))
        print_result(
            {
                k: v
                for k, v in result.items()
                if not isinstance(v, dict) or k in ("goals", "ratios")
            },
            as_json=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
