"""Shared by the bench scripts: sequential-call timing and result printing."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """Median and p99 of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    p50 = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return p50, p99


def time_calls(fn: Callable[[int], Any], calls: int, warm: int = 200) -> tuple[float, float]:
    """(p50, p99) in microseconds of `fn(i)` over `calls` sequential calls, after warm-up."""
    for i in range(warm):
        fn(i)
    samples = []
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - start)
    return percentiles(samples)


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process `pid`, all its threads (Linux /proc); 0 when
    it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_result(result: Mapping[str, Any], as_json: bool) -> None:
    """One JSON object, or one aligned `key value` line per entry."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
