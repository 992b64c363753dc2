"""Route latency and throughput with tracing off, against OTLP export, in the same run.

For each mode (tracing off, OTLP keeping every trace, OTLP with a sample ratio) a fresh
server runs in a child process, set up the way `tierroute serve` sets it up
(`observability.setup`, then `TierRouteServer`) from TIERROUTE_TELEMETRY_* and OTEL_* variables.
It exports over OTLP/gRPC to a sink collector in the same child process, as a local
collector would receive it. The query log is off, so only tracing differs between modes. Each
mode gets Route median and p99 over sequential calls, then throughput with 32 calls in
flight; ratios are against the tracing-off run. Modes alternate over `--rounds` rounds and
the per-mode figure is the median of its rounds.

    .venv/bin/python bench/tracing_bench.py [--calls 3000] [--seconds 5] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from grpc import aio

QUERIES = [
    "What is the capital of France?",
    "Question: A 0.5 kg ball is thrown upward at 12 m/s. How high does it rise?\nOptions: "
    "A. 7.3 m B. 3.1 m C. 14 m D. 9.8 m\nAnswer: Let's think step by step.",
    "You are given a Python function and an assertion containing an input to the function. "
    "def f(x):\n    return sorted(x)[::-1]\nassert f([3, 1, 2]) == ??",
    "Find the number of ordered pairs (a, b) of integers with 1 <= a, b <= 100 such that "
    "a^2 + b^2 is divisible by 7.",
]


def _modes(sample_ratio: float) -> dict[str, dict[str, str]]:
    """Mode name -> the telemetry variables the server is started with."""
    return {
        "off": {"TIERROUTE_TELEMETRY_MODE": "off"},
        "otlp": {"TIERROUTE_TELEMETRY_MODE": "otlp", "TIERROUTE_TELEMETRY_SAMPLE_RATIO": "1"},
        f"otlp_ratio_{sample_ratio:g}": {
            "TIERROUTE_TELEMETRY_MODE": "otlp",
            "TIERROUTE_TELEMETRY_SAMPLE_RATIO": str(sample_ratio),
        },
    }


def _serve(overrides: dict[str, str], ready: Any, stop: Any) -> None:
    """Child process: a sink OTLP collector and the real server, on ephemeral ports."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from tierroute import observability
    from tierroute.api.server import TierRouteServer
    from tierroute.settings import Settings

    received = 0
    lock = threading.Lock()

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(  # noqa: N802 - the generated service's method name
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            nonlocal received
            spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                received += spans
            return trace_service_pb2.ExportTraceServiceResponse()

    # A thread pool, since the exporter blocks on each Export call.
    sink = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), sink)
    sink_port = sink.add_insecure_port("127.0.0.1:0")
    sink.start()
    environ = {
        **os.environ,
        "TIERROUTE_QUERYLOG_ENABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        **overrides,
    }
    settings = Settings.from_env(environ)
    tel = observability.setup(settings, environ)

    async def main() -> None:
        server = TierRouteServer(settings, environ=environ, tracer_provider=tel.tracer_provider)
        ready.send(await server.start("127.0.0.1", 0))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await server.stop(0)

    try:
        asyncio.run(main())
    finally:
        tel.shutdown()
        sink.stop(None)
    ready.send(received)


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return p50, p99


async def _throughput(target: str, in_flight: int, seconds: float) -> tuple[float, int]:
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    async with aio.insecure_channel(target) as channel:
        stub = pb_grpc.TierRouterStub(channel)
        requests = [pb.RouteRequest(query=q) for q in QUERIES]
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                await stub.Route(requests[i % len(requests)], timeout=5)
                done += 1
                i += in_flight

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(in_flight)))
        return done / (time.perf_counter() - start), done


def _measure(overrides: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    from tierroute.v1 import tierroute_pb2 as pb
    from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stop = ctx.Event()
    proc = ctx.Process(target=_serve, args=(overrides, child, stop), daemon=True)
    proc.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the server did not start within 120 s")
        port = parent.recv()
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.TierRouterStub(ch)
            requests = [pb.RouteRequest(query=q) for q in QUERIES]
            for i in range(200):
                stub.Route(requests[i % len(requests)], timeout=5)
            samples = []
            for i in range(args.calls):
                start = time.perf_counter_ns()
                stub.Route(requests[i % len(requests)], timeout=5)
                samples.append(time.perf_counter_ns() - start)
        p50, p99 = _percentiles(samples)
        rps, throughput_calls = asyncio.run(_throughput(target, args.in_flight, args.seconds))
    finally:
        stop.set()
    spans = parent.recv() if parent.poll(60) else -1
    proc.join(30)
    if proc.is_alive():
        proc.kill()
    return {
        "route_p50_us": p50,
        "route_p99_us": p99,
        "route_rps": rps,
        "rpcs": 200 + args.calls + throughput_calls,
        "spans_exported": spans,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measure")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--sample-ratio", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2, help="times each mode is measured")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    modes = _modes(args.sample_ratio)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    for r in range(args.rounds):
        # Alternate the order so drift in machine load does not favour one mode.
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for name in order:
            print(f"round {r + 1}/{args.rounds}: {name}...", file=sys.stderr)
            runs[name].append(_measure(modes[name], args))

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    base = {key: med("off", key) for key in ("route_p50_us", "route_p99_us", "route_rps")}
    result: dict[str, Any] = {
        "calls": args.calls,
        "seconds": args.seconds,
        "in_flight": args.in_flight,
        "rounds": args.rounds,
        "modes": {},
    }
    for name in modes:
        p50, p99, rps = (med(name, k) for k in ("route_p50_us", "route_p99_us", "route_rps"))
        result["modes"][name] = {
            "route_p50_us": round(p50, 1),
            "route_p99_us": round(p99, 1),
            "route_rps": round(rps, 1),
            "p50_over_off": round(p50 / base["route_p50_us"], 3),
            "p99_over_off": round(p99 / base["route_p99_us"], 3),
            "rps_over_off": round(rps / base["route_rps"], 3),
            # Spans the sink received per RPC served: checks that the sampling took effect.
            "spans_per_rpc": round(
                sum(run["spans_exported"] for run in runs[name])
                / sum(run["rpcs"] for run in runs[name]),
                3,
            ),
            "rounds": [
                {k: round(v, 1) for k, v in run.items() if k != "rpcs"} for run in runs[name]
            ],
        }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{'tracing':18} {'p50 us':>9} {'p99 us':>9} {'rps':>8} "
            f"{'p50/off':>8} {'p99/off':>8} {'rps/off':>8} {'spans/rpc':>10}"
        )
        for name, row in result["modes"].items():
            print(
                f"{name:18} {row['route_p50_us']:9.1f} {row['route_p99_us']:9.1f} "
                f"{row['route_rps']:8.1f} {row['p50_over_off']:8.3f} {row['p99_over_off']:8.3f} "
                f"{row['rps_over_off']:8.3f} {row['spans_per_rpc']:10.3f}"
            )
        print(
            f"{args.calls} sequential calls and {args.in_flight} in flight for {args.seconds:g} s "
            f"per mode; median of {args.rounds} round(s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
