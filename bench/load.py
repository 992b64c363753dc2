"""Bounded load test on loopback: Route and Cascade traffic with provider faults injected.

Starts `tierroute serve` in a child process on 127.0.0.1 with the replay backend (the real
recorded data when present, else synthetic answers) and its latency model scaled down, then
drives Route and Cascade calls at fixed arrival rates for a fixed time. Faults come two ways:
- by rate for the whole run, through `TIERROUTE_REPLAY_FAULTS` (`--faults`);
- by phase, through the `x-tierroute-fault` header on a share of the Cascade calls of that
  phase (`PHASES` below): a cheap-tier outage (529s), a burst of 429s on the mid tier, and
  timeouts and dropped connections on the top tier, each followed by a quiet phase.
It reports throughput, p50 and p99 latency, errors by status code, escalations and degraded
answers, hop errors by kind, circuit-breaker transitions (from the server's log), resident
memory of the server at start and end, and whether every OK call reached the query log
exactly once after a graceful SIGTERM. It stops by itself: at `--duration`, or earlier once
`--max-requests` calls have been sent.

    .venv/bin/python bench/load.py [--duration 90] [--route-rps 100] [--cascade-rps 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from grpc import aio

from tierroute.outcomes import default_data_path, iter_records
from tierroute.querylog import open_store
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

HOST = "127.0.0.1"  # loopback only, by design: there is no option to change it
DEFAULT_FAULTS = "429@cheap=0.03,529@mid=0.02,500=0.005,drop=0.005,timeout@expensive=0.005"
ROUTE_TIMEOUT_S = 5.0
CASCADE_TIMEOUT_S = 30.0
# The arrival loop never keeps more than this many calls of its own in flight; arrivals
# beyond it are counted as shed by the client instead of queueing without bound.
CLIENT_MAX_IN_FLIGHT = 400
# Cascade strategies by share of calls: self-routing always starts on the cheap tier, which
# the classifier rarely picks for the recorded (mostly hard) prompts.
STRATEGY_MIX = (
    (pb.STRATEGY_CLASSIFIER, 0.5),
    (pb.STRATEGY_SELF_ROUTING, 0.3),
    (pb.STRATEGY_HEURISTIC, 0.2),
)
BREAKER_LINE = re.compile(r"circuit breaker (\S+): (\w+) -> (\w+) \((.*)\)")


@dataclass(frozen=True)
class Phase:
    """A stretch of the run, as fractions of the duration, and the faults sent during it."""

    name: str
    start: float
    end: float
    # (x-tierroute-fault header, share of Cascade calls that carry it)
    faults: tuple[tuple[str, float], ...] = ()


PHASES = (
    Phase("baseline", 0.00, 0.20),
    Phase("cheap_outage", 0.20, 0.45, (("529@cheap", 1.0),)),
    Phase("recovery", 0.45, 0.60),
    Phase("mid_429_burst", 0.60, 0.75, (("429@mid", 0.6),)),
    Phase(
        "top_timeouts_and_drops", 0.75, 0.90, (("timeout@expensive", 0.1), ("drop@expensive", 0.1))
    ),
    Phase("cool_down", 0.90, 1.00),
)


@dataclass
class Sample:
    """One finished call."""

    kind: str
    phase: str
    request_id: str
    latency_s: float
    code: str
    escalated: bool = False
    reasons: tuple[str, ...] = ()
    degraded: bool = False
    tier: str = ""
    hop_errors: tuple[str, ...] = ()
    fault: str = ""


@dataclass
class ServerWatch:
    """The child server's stderr, read on a thread: breaker transitions and tracebacks."""

    started: float
    transitions: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: int = 0
    errors: int = 0
    tail: list[str] = field(default_factory=list)

    def read(self, stream: Any) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            self.tail = [*self.tail[-40:], line]
            if "Traceback" in line:
                self.tracebacks += 1
            if " ERROR " in line:
                self.errors += 1
            found = BREAKER_LINE.search(line)
            if found:
                tier, old, new, why = found.groups()
                self.transitions.append(
                    {
                        "at_s": round(time.monotonic() - self.started, 2),
                        "tier": tier,
                        "from": old,
                        "to": new,
                        "why": why,
                    }
                )


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) `pid` has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_queries(limit: int, seed: int) -> tuple[list[str], str]:
    """Prompts to send: recorded ones (prompt text only) when the data is here, else made up."""
    path = default_data_path(os.environ)
    if path.is_file():
        # Only the prompt is read; the ground-truth fields are never touched.
        prompts = [str(r["prompt"]) for r in iter_records(path)]
        random.Random(seed).shuffle(prompts)
        return prompts[:limit], f"recorded ({path.name})"
    topics = ["capital", "integral", "python list", "photosynthesis", "prime", "contract law"]
    return [
        f"Question {i}: explain the {topics[i % len(topics)]} in case {i}?" for i in range(limit)
    ], "synthetic"


def start_server(args: argparse.Namespace, scratch: Path) -> tuple[subprocess.Popen[str], int]:
    """`tierroute serve` on a free loopback port; returns the process and its port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERROUTE_", "ANTHROPIC_"))}
    data = default_data_path(os.environ)
    env.update(
        TIERROUTE_ANTHROPIC_BACKEND="replay",
        TIERROUTE_REPLAY_TIME_SCALE=str(args.time_scale),
        TIERROUTE_REPLAY_FAULTS=args.faults,
        TIERROUTE_REPLAY_FAULT_SEED=str(args.seed),
        # An injected timeout holds its connection; the per-call timeout ends it first.
        TIERROUTE_REPLAY_TIMEOUT_HOLD_S="30",
        TIERROUTE_CASCADE_PER_CALL_TIMEOUT_S=str(args.per_call_timeout),
        TIERROUTE_BREAKER_COOLDOWN_S=str(args.breaker_cooldown),
        TIERROUTE_DB_URL=f"sqlite:///{scratch / 'querylog.sqlite3'}",
        TIERROUTE_QUERYLOG_SPOOL_PATH=str(scratch / "querylog.spool.jsonl"),
        TIERROUTE_SERVER_DRAIN_DELAY_S="0",
        TIERROUTE_TELEMETRY_MODE="off",
        TIERROUTE_HTTP_PORT="0",
    )
    if data.is_file():
        env["TIERROUTE_REPLAY_DATA"] = str(data)
    else:
        env["TIERROUTE_DATA"] = "/nonexistent/tierroute-data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierroute", "serve", "--host", HOST, "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r":(\d+)\s*$", line)
    if not found:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise SystemExit(f"the server did not start:\n{err[-3000:]}")
    return proc, int(found.group(1))


def phase_at(offset: float, duration: float) -> Phase:
    """The phase that covers `offset` seconds into the run."""
    fraction = offset / duration
    for phase in PHASES:
        if phase.start <= fraction < phase.end:
            return phase
    return PHASES[-1]


async def route_call(stub: Any, query: str, request_id: str, phase: Phase) -> Sample:
    """One Route call, timed."""
    started = time.perf_counter()
    try:
        await stub.Route(
            pb.RouteRequest(query=query, request_id=request_id), timeout=ROUTE_TIMEOUT_S
        )
        code = "OK"
    except aio.AioRpcError as err:
        code = err.code().name
    return Sample("route", phase.name, request_id, time.perf_counter() - started, code)


async def cascade_call(
    stub: Any, query: str, request_id: str, phase: Phase, *, fault: str, strategy: int
) -> Sample:
    """One Cascade call with the phase's fault header when one was drawn, timed."""
    metadata = (("x-tierroute-fault", fault),) if fault else ()
    started = time.perf_counter()
    try:
        response = await stub.Cascade(
            pb.CascadeRequest(query=query, request_id=request_id, strategy=strategy),
            metadata=metadata,
            timeout=CASCADE_TIMEOUT_S,
        )
    except aio.AioRpcError as err:
        elapsed = time.perf_counter() - started
        return Sample("cascade", phase.name, request_id, elapsed, err.code().name, fault=fault)
    elapsed = time.perf_counter() - started
    return Sample(
        "cascade",
        phase.name,
        request_id,
        elapsed,
        "OK",
        escalated=response.escalated,
        reasons=tuple(
            pb.ReasonCode.Name(r.code).removeprefix("REASON_CODE_")
            for r in response.escalation_reasons
        ),
        degraded=response.degraded,
        tier=response.tier.name,
        hop_errors=tuple(h.error_kind for h in response.hops if h.error_kind),
        fault=fault,
    )


async def drive(
    args: argparse.Namespace, port: int, queries: list[str], pid: int
) -> tuple[list[Sample], dict[str, Any]]:
    """Send traffic at the stated rates for the stated time; returns samples and counters."""
    rng = random.Random(args.seed)
    samples: list[Sample] = []
    pending: set[asyncio.Task[Sample]] = set()
    shed: Counter[str] = Counter()
    rss: list[tuple[float, int]] = []
    sent = 0
    async with aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.TierRouterStub(channel)
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_at = {"route": start, "cascade": start}
        rates = {"route": args.route_rps, "cascade": args.cascade_rps}
        next_rss = start
        while True:
            now = loop.time()
            offset = now - start
            if offset >= args.duration or sent >= args.max_requests:
                break
            if now >= next_rss:
                rss.append((round(offset, 1), rss_kib(pid)))
                next_rss += 5.0
            for kind, rate in rates.items():
                while rate > 0 and next_at[kind] <= now and sent < args.max_requests:
                    next_at[kind] += 1.0 / rate
                    if len(pending) >= CLIENT_MAX_IN_FLIGHT:
                        shed[kind] += 1
                        continue
                    phase = phase_at(offset, args.duration)
                    query = queries[sent % len(queries)]
                    request_id = f"load-{kind}-{sent}"
                    if kind == "route":
                        coro = route_call(stub, query, request_id, phase)
                    else:
                        fault = "" if args.no_faults else _pick(rng, phase.faults) or ""
                        strategy = _pick(rng, STRATEGY_MIX) or pb.STRATEGY_CLASSIFIER
                        coro = cascade_call(
                            stub, query, request_id, phase, fault=fault, strategy=strategy
                        )
                    task = asyncio.create_task(coro)
                    pending.add(task)
                    task.add_done_callback(
                        lambda t: (pending.discard(t), samples.append(t.result()))
                    )
                    sent += 1
            wake = min(v for k, v in next_at.items() if rates[k] > 0)
            await asyncio.sleep(max(0.0, min(wake, next_rss) - loop.time()))
        traffic_s = loop.time() - start
        if pending:
            await asyncio.wait(set(pending), timeout=CASCADE_TIMEOUT_S * 2)
        drained_s = loop.time() - start
    return samples, {
        "sent": sent,
        "shed_by_client": dict(shed),
        "traffic_s": round(traffic_s, 2),
        "drained_s": round(drained_s, 2),
        "rss_kib_samples": rss,
        "unfinished": len(pending),
    }


T = TypeVar("T")


def _pick(rng: random.Random, shares: tuple[tuple[T, float], ...]) -> T | None:
    """One value drawn by its share; None for the share left over."""
    draw = rng.random()
    for value, share in shares:
        if draw < share:
            return value
        draw -= share
    return None


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0-1) by the nearest-rank rule; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summarize(samples: list[Sample], seconds: float) -> dict[str, Any]:
    """Throughput, latency and outcomes of a set of calls."""
    out: dict[str, Any] = {}
    for kind in ("route", "cascade"):
        mine = [s for s in samples if s.kind == kind]
        ok = [s for s in mine if s.code == "OK"]
        lat = [s.latency_s * 1000 for s in ok]
        entry: dict[str, Any] = {
            "calls": len(mine),
            "ok": len(ok),
            "throughput_per_s": round(len(ok) / seconds, 1) if seconds else 0.0,
            "p50_ms": round(statistics.median(lat), 2) if lat else 0.0,
            "p99_ms": round(percentile(lat, 0.99), 2),
            "max_ms": round(max(lat), 2) if lat else 0.0,
            "status": dict(Counter(s.code for s in mine).most_common()),
        }
        if kind == "cascade":
            entry["escalated"] = sum(s.escalated for s in ok)
            entry["degraded"] = sum(s.degraded for s in ok)
            entry["escalation_reasons"] = dict(
                Counter(r for s in ok for r in s.reasons).most_common()
            )
            entry["answered_by"] = dict(Counter(s.tier for s in ok).most_common())
            entry["hop_errors"] = dict(Counter(e for s in ok for e in s.hop_errors).most_common())
            entry["with_fault_header"] = sum(bool(s.fault) for s in mine)
        out[kind] = entry
    return out


async def logged_ids(url: str) -> Counter[str]:
    """Request ids in the query log, with how many times each is there."""
    store = open_store(url)
    try:
        return Counter(r.request_id for r in await store.fetch_queries())
    finally:
        await store.aclose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole load test; returns the report."""
    queries, source = load_queries(5000, args.seed)
    with tempfile.TemporaryDirectory(prefix="tierroute-load-") as tmp:
        scratch = Path(tmp)
        boot = time.monotonic()
        proc, port = start_server(args, scratch)
        start_s = time.monotonic() - boot
        watch = ServerWatch(started=time.monotonic())
        reader = threading.Thread(target=watch.read, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            rss_start, cpu_start, load_start = rss_kib(proc.pid), cpu_s(proc.pid), os.getloadavg()
            watch.started = time.monotonic()
            samples, counters = asyncio.run(drive(args, port, queries, proc.pid))
            rss_end, cpu_end, load_end = rss_kib(proc.pid), cpu_s(proc.pid), os.getloadavg()
            stop_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=120)
            stop_s = time.monotonic() - stop_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=30)
        logged = asyncio.run(logged_ids(f"sqlite:///{scratch / 'querylog.sqlite3'}"))
    ok_ids = {s.request_id for s in samples if s.code == "OK"}
    duration = args.duration
    phases = {}
    for phase in PHASES:
        mine = [s for s in samples if s.phase == phase.name]
        span = (phase.end - phase.start) * duration
        phases[phase.name] = {
            "from_s": round(phase.start * duration, 1),
            "to_s": round(phase.end * duration, 1),
            "faults": []
            if args.no_faults
            else [f"{spec} on {share:.0%} of Cascade calls" for spec, share in phase.faults],
            **summarize(mine, span),
        }
    return {
        "config": {
            "duration_s": duration,
            "max_requests": args.max_requests,
            "route_rps": args.route_rps,
            "cascade_rps": args.cascade_rps,
            "time_scale": args.time_scale,
            "configured_fault_rates": args.faults,
            "per_call_timeout_s": args.per_call_timeout,
            "breaker_cooldown_s": args.breaker_cooldown,
            "queries": source,
            "cascade_strategy_mix": {pb.Strategy.Name(k): v for k, v in STRATEGY_MIX},
            "cpus": os.cpu_count(),
        },
        # Other work on the machine competes for the same cores: say how busy it was.
        "load_average_1m": {"start": load_start[0], "end": load_end[0]},
        "server_cpu_s": round(cpu_end - cpu_start, 1),
        "server_start_s": round(start_s, 2),
        **counters,
        "overall": summarize(samples, counters["traffic_s"]),
        "phases": phases,
        "breaker_transitions": watch.transitions,
        "rss_kib": {
            "start": rss_start,
            "end": rss_end,
            "max": max([rss_start, rss_end, *(v for _, v in counters["rss_kib_samples"])]),
        },
        "shutdown": {
            "exit_code": returncode,
            "seconds": round(stop_s, 2),
            "server_tracebacks": watch.tracebacks,
            "server_error_lines": watch.errors,
        },
        "query_log": {
            "ok_calls": len(ok_ids),
            "logged": sum(logged.values()),
            "ok_missing": len(ok_ids - set(logged)),
            "logged_more_than_once": sum(1 for n in logged.values() if n > 1),
        },
    }


def print_report(report: dict[str, Any]) -> None:
    """The report, for people."""
    cfg = report["config"]
    print(
        f"load: {cfg['duration_s']}s, Route {cfg['route_rps']}/s + Cascade {cfg['cascade_rps']}/s,"
        f" time scale {cfg['time_scale']}, {cfg['queries']} queries, {cfg['cpus']} CPUs"
    )
    print(f"configured fault rates: {cfg['configured_fault_rates']}")
    load = report["load_average_1m"]
    print(
        f"machine load average (1 min): {load['start']:.2f} at start, {load['end']:.2f} at end;"
        f" server CPU {report['server_cpu_s']}s"
    )
    print(
        f"server start {report['server_start_s']}s; sent {report['sent']}, shed by client "
        f"{report['shed_by_client'] or 0}, unfinished {report['unfinished']}"
    )
    for scope, figures in [("overall", report["overall"]), *report["phases"].items()]:
        head = scope
        if scope != "overall":
            head += f" [{figures['from_s']}-{figures['to_s']}s] " + (
                ", ".join(figures["faults"]) or "no header faults"
            )
        print(f"\n{head}")
        for kind in ("route", "cascade"):
            f = figures[kind]
            print(
                f"  {kind:7} {f['ok']:>6}/{f['calls']:<6} ok  {f['throughput_per_s']:>7}/s"
                f"  p50 {f['p50_ms']:>8} ms  p99 {f['p99_ms']:>8} ms  status {f['status']}"
            )
        c = figures["cascade"]
        print(
            f"          escalated {c['escalated']}, degraded {c['degraded']},"
            f" reasons {c['escalation_reasons']}, answered by {c['answered_by']}"
        )
        print(f"          hop errors {c['hop_errors']}")
    print("\nbreaker transitions:")
    for t in report["breaker_transitions"]:
        print(f"  {t['at_s']:>7}s  {t['tier']:10} {t['from']} -> {t['to']} ({t['why']})")
    rss = report["rss_kib"]
    print(
        f"\nserver RSS: start {rss['start'] / 1024:.1f} MiB, end {rss['end'] / 1024:.1f} MiB,"
        f" max {rss['max'] / 1024:.1f} MiB"
    )
    sd, ql = report["shutdown"], report["query_log"]
    print(
        f"shutdown: exit {sd['exit_code']} in {sd['seconds']}s,"
        f" tracebacks {sd['server_tracebacks']}"
    )
    print(
        f"query log: {ql['ok_calls']} OK calls, {ql['logged']} logged, {ql['ok_missing']} OK calls"
        f" missing, {ql['logged_more_than_once']} logged more than once"
    )


def main() -> int:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of traffic")
    parser.add_argument("--max-requests", type=int, default=50_000, help="stop after this many")
    parser.add_argument("--route-rps", type=float, default=100.0)
    parser.add_argument("--cascade-rps", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=0.05, help="replay latency scale")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="replay.faults rates")
    parser.add_argument("--per-call-timeout", type=float, default=2.0)
    parser.add_argument("--breaker-cooldown", type=float, default=5.0)
    parser.add_argument(
        "--no-faults", action="store_true", help="no fault rates or headers: the baseline"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.duration <= 0 or args.duration > 3600 or args.max_requests < 1:
        parser.error("--duration must be within (0, 3600] and --max-requests at least 1")
    if args.no_faults:
        args.faults = ""
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
