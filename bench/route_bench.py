"""Route latency and throughput on loopback, against baselines measured in the same run.

One run measures:
- in process: onnxruntime `predict_proba` (the classifier alone, the bundle's graph over
  the prompt's n-grams), the same pipeline's dense graph as skl2onnx exports it, scikit-learn
  `predict_proba` of the same pipeline (refitted from the data file with the training code)
  and the value plan of a Cascade (`score_cascade`: scores and plan from the shared feature
  pass), each as median (and p99) over sequential calls;
- one server process: a bare gRPC echo round trip (the floor any RPC pays) and the Route
  round trip with the bundled model, sequential; then Route and echo throughput with 32
  calls in flight on one channel (the keys `route_rps`, `echo_rps`), and the Route server's
  health check the same way (`health_rps`: its interceptors and gRPC work, no handler);
- the server process's garbage-collector pauses over those measures (total per second,
  longest, full collections; then one full collection's pause, timed), and the CPU each
  call cost the server, its query-log writer process and the client (Linux /proc);
- `tierroute serve --workers 1` and `--workers N` as shipped (query log on, its writer
  process included): Route throughput with the calls spread over `--connections` channels,
  each its own TCP connection, so that the kernel spreads them over the workers.

The servers run in child processes so client and server do not share a GIL.

    .venv/bin/python bench/route_bench.py [--calls 3000] [--seconds 8] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from timing import print_result, process_cpu_s, time_calls

ECHO_METHOD = "/bench.Echo/Echo"
QUERIES = [
    "What is the capital of France?",
    "Question: A 0.5 kg ball is thrown upward at 12 m/s. How high does it rise?\nOptions: "
    "A. 7.3 m B. 3.1 m C. 14 m D. 9.8 m\nAnswer: Let's think step by step.",
    "You are given a Python function and an assertion containing an input to the function. "
    "def f(x):\n    return sorted(x)[::-1]\nassert f([3, 1, 2]) == ??",
    "Find the number of ordered pairs (a, b) of integers with 1 <= a, b <= 100 such that "
    "a^2 + b^2 is divisible by 7.",
]


def _serve(ready: Any, stop: Any) -> None:
    """Child process: an echo server and the real tierroute server, on ephemeral ports."""
    from tierroute.api.server import TierRouteServer
    from tierroute.settings import Settings

    async def main() -> None:
        echo = aio.server()
        echo.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Echo",
                    {"Echo": grpc.unary_unary_rpc_method_handler(_echo)},
                ),
            )
        )
        echo_port = echo.add_insecure_port("127.0.0.1:0")
        await echo.start()
        server = TierRouteServer(Settings.from_env(os.environ))
        route_port = await server.start("127.0.0.1", 0)
        pauses = _GcPauses()
        ready.send((echo_port, route_port))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        summary = pauses.summary()
        # What one full collection stops the loop for now, start-up's heap included unless
        # the server froze it (tierroute.api.server._settle_heap).
        started = time.perf_counter()
        gc.collect()
        summary["server_full_collection_ms"] = round((time.perf_counter() - started) * 1000, 1)
        ready.send(summary)
        await server.stop(0)
        await echo.stop(0)

    asyncio.run(main())


class _GcPauses:
    """The cyclic collector's passes in this process from now on: each stops the event loop."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.total = 0.0
        self.longest = 0.0
        self.full = 0
        self._at = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._at = time.perf_counter()
            return
        pause = time.perf_counter() - self._at
        self.total += pause
        self.longest = max(self.longest, pause)
        self.full += info["generation"] == 2

    def summary(self) -> dict[str, float]:
        """Pause time per second of the run, the longest pause, full collections."""
        wall = time.perf_counter() - self.started
        return {
            "server_gc_ms_per_s": round(self.total * 1000 / wall, 2),
            "server_gc_longest_pause_ms": round(self.longest * 1000, 1),
            "server_gc_full_collections": self.full,
        }


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, whichever of its threads started them."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as kids:
                found.extend(int(k) for k in kids.read().split())
    return found


def _cpu_per_call(server: int, run: Any) -> tuple[float, dict[str, float]]:
    """Run one throughput measure (`run()` gives its rate and calls); its rate and the CPU
    microseconds each call cost the server process, its children (the query-log writer) and
    this client process."""
    children = _children(server)

    def cpu() -> tuple[float, float, float]:
        kids = sum(process_cpu_s(c) for c in children)
        return process_cpu_s(server), kids, time.process_time()

    before = cpu()
    rate, calls = run()
    after = cpu()
    calls = max(1, calls)
    spent = [(b - a) * 1e6 / calls for a, b in zip(before, after, strict=True)]
    server_us, writer_us, client_us = spent
    return rate, {
        "server": round(server_us, 1),
        "writer": round(writer_us, 1),
        "client": round(client_us, 1),
    }


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _throughput(
    target: str, make_call: Any, in_flight: int, seconds: float, connections: int = 1
) -> tuple[float, int]:
    """Calls per second with `in_flight` calls outstanding, and how many completed."""
    # A local subchannel pool per channel: each channel is its own TCP connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [aio.insecure_channel(target, options=options) for _ in range(connections)]
    try:
        calls = [make_call(channel) for channel in channels]
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            call = calls[k % connections]
            i = k
            while time.perf_counter() < deadline:
                await call(i)
                done += 1
                i += in_flight

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(in_flight)))
        return done / (time.perf_counter() - start), done
    finally:
        for channel in channels:
            await channel.close()


def _serve_command(workers: int, scratch: str, tag: str) -> tuple[subprocess.Popen[str], int]:
    """`tierroute serve --workers N` as shipped, its query log in the scratch directory."""
    env = dict(os.environ)
    env.update(
        TIERROUTE_DB_URL=f"sqlite:///{scratch}/{tag}.sqlite3",
        TIERROUTE_QUERYLOG_SPOOL_PATH=f"{scratch}/{tag}.spool.jsonl",
        TIERROUTE_SERVER_DRAIN_DELAY_S="0",
        # Route only: the Anthropic HTTP endpoint stays off (and off port 8080).
        TIERROUTE_HTTP_PORT="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierroute", "--log-level", "WARNING", "serve", "--host",
         "127.0.0.1", "--port", "0", "--workers", str(workers)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    # The gRPC line, "tierroute serving on HOST:PORT" (an HTTP line would say so).
    line = proc.stdout.readline()
    found = re.search(r"serving on \S+:(\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"tierroute serve --workers {workers} did not start: {line!r}")
    return proc, int(found.group(1))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


# One script, read top to bottom as the measurement plan: fit, time in-process, time over gRPC.
def main() -> int:  # noqa: PLR0915 - the plan, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per measure")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measure")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=0, help="N for the N-worker run (default: one per core)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="channels of the 1- and N-worker runs"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tierroute.model import create_session
    from tierroute.model.classifier import RouterModel
    from tierroute.offline.training.export import to_onnx
    from tierroute.offline.training.labels import load_training_set, training_rows
    from tierroute.offline.training.model import fit_pipeline
    from tierroute.outcomes import default_data_path
    from tierroute.routing.features import classifier_text
    from tierroute.settings import Settings
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    settings = Settings.from_env(os.environ)
    model = RouterModel.load(settings.routing.model_dir, len(settings.tiers))
    data = default_data_path(os.environ)
    print(f"fitting the scikit-learn pipeline on {data} for the baseline...", file=sys.stderr)
    dataset = load_training_set(Path(data), model.prefix_chars)
    keep, labels = training_rows(dataset.labels, model.metadata["none_label"]["policy"])
    texts_fit = [t for t, k in zip(dataset.texts, keep, strict=True) if k]
    pipeline = fit_pipeline(texts_fit, labels, len(model.labels))

    texts = [classifier_text(q, model.prefix_chars) for q in QUERIES]
    onnx_p50, onnx_p99 = time_calls(lambda i: model.predict_proba(QUERIES[i % 4]), args.calls)
    # The same pipeline's graph as skl2onnx exports it (dense over the whole vocabulary),
    # served the same way, against the bundle's graph over the prompt's n-grams only.
    dense = RouterModel(
        create_session(to_onnx(pipeline)),
        version="dense",
        labels=model.labels,
        thresholds=model.thresholds,
        prefix_chars=model.prefix_chars,
        metadata={},
    )
    dense_p50, _ = time_calls(lambda i: dense.predict_proba(QUERIES[i % 4]), args.calls)
    sk_p50, sk_p99 = time_calls(lambda i: pipeline.predict_proba([texts[i % 4]]), args.calls)
    # What a value-planned Cascade pays for its scores and plan, against the classifier alone.
    plan_p50, plan_p99 = time_calls(lambda i: model.score_cascade(QUERIES[i % 4]), args.calls)
    value = model.value_model
    shared = bool(value is not None and value.shared)

    # The server runs as shipped, query log included; its files go to a scratch directory.
    scratch = tempfile.mkdtemp(prefix="tierroute-bench-")
    os.environ.setdefault("TIERROUTE_DB_URL", f"sqlite:///{scratch}/querylog.sqlite3")
    os.environ.setdefault("TIERROUTE_QUERYLOG_SPOOL_PATH", f"{scratch}/querylog.spool.jsonl")
    os.environ["TIERROUTE_HTTP_PORT"] = "0"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stop = ctx.Event()
    # Not a daemon: the server starts its own query-log writer process, as shipped.
    proc = ctx.Process(target=_serve, args=(child, stop))
    proc.start()
    echo_port, route_port = parent.recv()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{echo_port}") as ch:
            echo = ch.unary_unary(ECHO_METHOD)
            payload = b"x" * 64
            echo_p50, echo_p99 = time_calls(lambda i: echo(payload, timeout=5), args.calls)
        with grpc.insecure_channel(f"127.0.0.1:{route_port}") as ch:
            stub = pb_grpc.TierRouterStub(ch)
            requests = [pb.RouteRequest(query=q) for q in QUERIES]
            route_p50, route_p99 = time_calls(
                lambda i: stub.Route(requests[i % 4], timeout=5), args.calls
            )

        def echo_call(channel: aio.Channel) -> Any:
            method = channel.unary_unary(ECHO_METHOD)
            return lambda i: method(b"x" * 64, timeout=5)

        def route_call(channel: aio.Channel) -> Any:
            s = pb_grpc.TierRouterStub(channel)
            reqs = [pb.RouteRequest(query=q) for q in QUERIES]
            return lambda i: s.Route(reqs[i % 4], timeout=5)

        echo_rps, echo_cpu = _cpu_per_call(
            proc.pid,
            lambda: asyncio.run(
                _throughput(f"127.0.0.1:{echo_port}", echo_call, args.in_flight, args.seconds)
            ),
        )
        route_rps, route_cpu = _cpu_per_call(
            proc.pid,
            lambda: asyncio.run(
                _throughput(f"127.0.0.1:{route_port}", route_call, args.in_flight, args.seconds)
            ),
        )

        def health_call(channel: aio.Channel) -> Any:
            s = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            return lambda i: s.Check(request, timeout=5)

        # The same server's floor: a health check passes the interceptors and the gRPC
        # machinery a Route call does, with no handler work and no log record.
        health_rps, health_cpu = _cpu_per_call(
            proc.pid,
            lambda: asyncio.run(
                _throughput(f"127.0.0.1:{route_port}", health_call, args.in_flight, args.seconds)
            ),
        )
    finally:
        stop.set()
        gc_pauses = parent.recv() if parent.poll(30) else {}
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)

    from tierroute.api.workers import default_workers

    n_workers = args.workers or default_workers(settings)
    by_workers: dict[int, float] = {}
    for workers in (1, n_workers):
        served, port = _serve_command(workers, scratch, f"workers{workers}")
        try:
            by_workers[workers], _ = asyncio.run(
                _throughput(
                    f"127.0.0.1:{port}", route_call, args.in_flight, args.seconds,
                    connections=args.connections,
                )
            )  # fmt: skip
        finally:
            _stop(served)

    result = {
        "echo_p50_us": round(echo_p50, 1),
        "echo_p99_us": round(echo_p99, 1),
        "route_p50_us": round(route_p50, 1),
        "route_p99_us": round(route_p99, 1),
        "onnx_p50_us": round(onnx_p50, 1),
        "onnx_p99_us": round(onnx_p99, 1),
        "onnx_dense_graph_p50_us": round(dense_p50, 1),
        "sklearn_p50_us": round(sk_p50, 1),
        "sklearn_p99_us": round(sk_p99, 1),
        "route_rps": round(route_rps, 1),
        "echo_rps": round(echo_rps, 1),
        "workers": n_workers,
        "connections": args.connections,
        "serve_1_worker_rps": round(by_workers[1], 1),
        "serve_n_workers_rps": round(by_workers[n_workers], 1),
        "value_plan_p50_us": round(plan_p50, 1),
        "value_plan_p99_us": round(plan_p99, 1),
        "value_plan_shared_pass": shared,
        # The Route server process's collector passes over the whole run (both throughput
        # measures included): the event loop answers nothing during one.
        **gc_pauses,
        # CPU microseconds per call during the throughput measures: where a Route costs more
        # than an echo (its server process, the query-log writer process, the client).
        "echo_cpu_us_per_call": echo_cpu,
        "route_cpu_us_per_call": route_cpu,
        # The Route server's health check: its interceptors and gRPC work without a handler.
        "health_rps": round(health_rps, 1),
        "health_cpu_us_per_call": health_cpu,
        "calls": args.calls,
        "in_flight": args.in_flight,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "model_version": model.version,
        "ratios": {
            "route_p50_over_sklearn_p50": round(route_p50 / sk_p50, 3),
            "sklearn_p50_over_onnx_p50": round(sk_p50 / onnx_p50, 2),
            "onnx_dense_graph_p50_over_onnx_p50": round(dense_p50 / onnx_p50, 2),
            "route_p50_over_echo_p50": round(route_p50 / echo_p50, 2),
            "route_rps_over_echo_rps": round(route_rps / echo_rps, 3),
            "n_workers_over_1_worker_rps": round(by_workers[n_workers] / by_workers[1], 3),
            "value_plan_over_classifier_p50": round(plan_p50 / onnx_p50, 3),
        },
        # Against the floor measured in the same run: a bare grpc.aio echo, one process each.
        "goals": {
            "route_p50_at_most_1_5x_echo": route_p50 <= 1.5 * echo_p50,
            "route_rps_at_least_40pct_of_echo": route_rps >= 0.4 * echo_rps,
        },
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
