"""Time to first token: CascadeStream against the unary Cascade, in wall time on loopback.

Starts `tierroute serve` in a child process on 127.0.0.1 with the replay backend (the real
recorded data when present, else synthetic answers) and its latency model at
`--time-scale`, then answers the same queries twice, one call at a time: once with the
unary Cascade (the baseline: its first token arrives with the whole response) and once
with CascadeStream (the first `text` event), in alternating order so that neither always
runs second. Both calls carry the same request id, so judge sampling draws alike. It
reports p50 and p95 of each, for escalated and non-escalated answers (as the streamed
response says), and their ratios; on a shared machine the ratios are the signal, not the
absolute times.

    .venv/bin/python bench/stream_bench.py [--queries 200] [--time-scale 0.2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import aio

from load import HOST, ServerWatch, load_queries, percentile, start_server
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc
from timing import print_result

CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Pair:
    """One query answered both ways: wall milliseconds to the first token of each."""

    unary_ms: float
    stream_first_ms: float
    stream_total_ms: float
    escalated: bool


async def unary(stub: Any, request: pb.CascadeRequest) -> float:
    started = time.perf_counter()
    await stub.Cascade(request, timeout=CALL_TIMEOUT_S)
    return (time.perf_counter() - started) * 1000


async def streamed(stub: Any, request: pb.CascadeRequest) -> tuple[float, float, bool]:
    started = time.perf_counter()
    first: float | None = None
    escalated = False
    async for event in stub.CascadeStream(request, timeout=CALL_TIMEOUT_S):
        kind = event.WhichOneof("event")
        if kind == "text" and first is None:
            first = (time.perf_counter() - started) * 1000
        elif kind == "response":
            escalated = event.response.escalated
    total = (time.perf_counter() - started) * 1000
    return (total if first is None else first), total, escalated


async def measure(port: int, queries: list[str], seed: int) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    async with aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.TierRouterStub(channel)
        await stub.Route(pb.RouteRequest(query="warm-up"), timeout=10.0)
        for i, query in enumerate(queries):
            request = pb.CascadeRequest(query=query, request_id=f"stream-bench-{i}")
            if rng.random() < 0.5:
                unary_ms = await unary(stub, request)
                first, total, escalated = await streamed(stub, request)
            else:
                first, total, escalated = await streamed(stub, request)
                unary_ms = await unary(stub, request)
            pairs.append(Pair(unary_ms, first, total, escalated))
    return pairs


def summarize(pairs: list[Pair]) -> dict[str, Any]:
    groups = {
        "all": pairs,
        "escalated": [p for p in pairs if p.escalated],
        "not_escalated": [p for p in pairs if not p.escalated],
    }
    out: dict[str, Any] = {}
    for name, group in groups.items():
        if not group:
            out[name] = {"n": 0}
            continue
        u = [p.unary_ms for p in group]
        s = [p.stream_first_ms for p in group]
        t = [p.stream_total_ms for p in group]
        out[name] = {
            "n": len(group),
            "unary_p50_ms": round(percentile(u, 0.5), 1),
            "unary_p95_ms": round(percentile(u, 0.95), 1),
            "stream_first_p50_ms": round(percentile(s, 0.5), 1),
            "stream_first_p95_ms": round(percentile(s, 0.95), 1),
            "stream_total_p50_ms": round(percentile(t, 0.5), 1),
            "ratio_p50": round(percentile(s, 0.5) / percentile(u, 0.5), 3),
            "ratio_p95": round(percentile(s, 0.95) / percentile(u, 0.95), 3),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--time-scale", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # start_server's knobs: no faults, the default per-call timeout and breaker cooldown.
    server_args = argparse.Namespace(
        time_scale=args.time_scale,
        faults="",
        seed=args.seed,
        per_call_timeout=60.0,
        breaker_cooldown=10.0,
    )
    queries, source = load_queries(args.queries, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        proc, port = start_server(server_args, Path(scratch))
        # The server logs every call; its stderr must be read or the pipe fills and it stalls.
        watch = ServerWatch(started=time.monotonic())
        threading.Thread(target=watch.read, args=(proc.stderr,), daemon=True).start()
        try:
            pairs = asyncio.run(measure(port, queries, args.seed))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if watch.tracebacks or watch.errors:
        print("\n".join(watch.tail), file=sys.stderr)
    result = {
        "queries": len(pairs),
        "server_errors": watch.errors,
        "source": source,
        "time_scale": args.time_scale,
        **{
            f"{group}.{key}": value
            for group, figures in summarize(pairs).items()
            for key, value in figures.items()
        },
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
