"""Query log cost: `QueryLogWriter.submit` per record, and writer throughput into each store.

`submit` is timed over `--records` prebuilt sample records, against its floor measured in the
same run: appending the same records to a deque under a lock. Writer throughput is the
records stored per second by `flush()` after the submits (batches of `--batch-size`), against
calling the store's `write_batch` directly with the same batches on a fresh store. Stores: a
temporary SQLite file, and a throw-away schema on the test PostgreSQL (127.0.0.1:5432,
database `test`, or `TIERROUTE_TEST_PG_URL`) when it is reachable.

The writer process (`querylog.writer = "process"`): `--trickle` records sent through a
`QueryLogClient` as serving traffic sends them, a few per event-loop turn (8 every 4 ms,
about 2,000/s), into a writer process on a SQLite file; the writer process's CPU per record
and the transactions it took, with group commit (the shipped `commit_delay_s`) against
without (`commit_delay_s = 0`), in the same run (Linux /proc for the CPU).

    .venv/bin/python bench/querylog_bench.py [--records 20000] [--batch-size 200]
        [--trickle 10000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from timing import process_cpu_s


def _submit_floor_us(records: list[Any]) -> float:
    """The least a thread-safe enqueue costs: a deque append under a lock, per record."""
    queue: collections.deque[Any] = collections.deque()
    lock = threading.Lock()
    start = time.perf_counter()
    for record in records:
        with lock:
            queue.append(record)
    return 1e6 * (time.perf_counter() - start) / len(records)


async def _writer_run(
    url: str, records: list[Any], batch_size: int, scratch: Path
) -> dict[str, Any]:
    from tierroute.querylog import QueryLogWriter, open_store
    from tierroute.settings import QueryLogConfig

    # The queue holds every record, so the submits measure enqueueing, never spooling.
    config = QueryLogConfig(
        queue_size=len(records) + 10,
        batch_size=batch_size,
        flush_interval_s=0.5,
        spool_path=scratch / "spool.jsonl",
    )
    writer = QueryLogWriter(open_store(url), config)
    await writer.start()
    # Migrate before the clock starts.
    await writer.flush()
    # No await between submits: the writer's flusher cannot run while they are timed.
    start = time.perf_counter()
    for record in records:
        writer.submit(record)
    submitted = time.perf_counter()
    await writer.flush()
    stored = time.perf_counter()
    await writer.close(30)
    stats = writer.stats()
    if stats.written != len(records):
        raise RuntimeError(f"{url}: wrote {stats.written} of {len(records)} records ({stats})")
    return {
        "submit_us": 1e6 * (submitted - start) / len(records),
        "writer_records_per_s": len(records) / (stored - submitted),
    }


async def _direct_run(url: str, records: list[Any], batch_size: int) -> float:
    """Records/s through `write_batch` alone, the same batches, on a fresh store."""
    from tierroute.querylog import open_store

    store = open_store(url)
    try:
        await store.migrate()
        start = time.perf_counter()
        for i in range(0, len(records), batch_size):
            await store.write_batch(records[i : i + batch_size], [])
        return len(records) / (time.perf_counter() - start)
    finally:
        await store.aclose()


@contextlib.contextmanager
def _fresh_store(kind: str, scratch: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{scratch / name}.sqlite3"
        return
    from tierroute.querylog.doubles import reachable_postgres_url, temporary_schema

    base = reachable_postgres_url()
    if base is None:
        raise LookupError("PostgreSQL is unreachable")
    with temporary_schema(base) as url:
        yield url


def _measure(kind: str, records: list[Any], batch_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tierroute-qlbench-") as tmp:
        scratch = Path(tmp)
        with _fresh_store(kind, scratch, "writer") as url:
            result = asyncio.run(_writer_run(url, records, batch_size, scratch))
        with _fresh_store(kind, scratch, "direct") as url:
            direct = asyncio.run(_direct_run(url, records, batch_size))
    result["direct_records_per_s"] = direct
    return result


async def _trickle_run(records: list[Any], commit_delay_s: float) -> dict[str, float]:
    """Records through a client into a writer process, 8 every 4 ms; its CPU per record."""
    from tierroute.querylog import QueryLogClient, WriterProcess, worker_spool_path
    from tierroute.settings import QueryLogConfig, Secret

    with tempfile.TemporaryDirectory(prefix="tierroute-qlbench-") as tmp:
        scratch = Path(tmp)
        config = QueryLogConfig(
            url=Secret(f"sqlite:///{scratch}/querylog.sqlite3"),
            spool_path=scratch / "spool.jsonl",
            commit_delay_s=commit_delay_s,
        )
        (scratch / "run").mkdir()
        writer = WriterProcess(config, scratch / "run")
        await asyncio.to_thread(writer.start)
        assert writer.pid is not None
        client = QueryLogClient(config, writer.address, spool_path=worker_spool_path(config, 0))
        try:
            await client.start()
            before = process_cpu_s(writer.pid)
            for i in range(0, len(records), 8):
                for record in records[i : i + 8]:
                    client.submit(record)
                await asyncio.sleep(0.004)
            await client.wait_drained()
            spent = process_cpu_s(writer.pid) - before
            stats = await client.writer_stats() or {}
            await client.close(config.close_timeout_s)
        finally:
            await asyncio.to_thread(writer.stop)
    return {
        "writer_cpu_us_per_record": round(spent * 1e6 / len(records), 1),
        "transactions": stats.get("stored_batches", 0),
        "records_per_transaction": round(len(records) / max(1, stats.get("stored_batches", 0)), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per store")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--trickle", type=int, default=10_000, help="writer-process records")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tierroute.querylog.doubles import sample_record

    records = [sample_record(f"bench-{i}") for i in range(args.records)]
    floor_us = statistics.median([_submit_floor_us(records) for _ in range(5)])
    result: dict[str, Any] = {
        "records": args.records,
        "batch_size": args.batch_size,
        "submit_floor_us": round(floor_us, 3),
        "stores": {},
    }
    for kind in ("sqlite", "postgresql"):
        print(f"{kind}...", file=sys.stderr)
        try:
            run = _measure(kind, records, args.batch_size)
        except LookupError as exc:
            result["stores"][kind] = {"skipped": str(exc)}
            continue
        result["stores"][kind] = {
            "submit_us": round(run["submit_us"], 3),
            "submit_over_floor": round(run["submit_us"] / floor_us, 2),
            "writer_records_per_s": round(run["writer_records_per_s"]),
            "direct_records_per_s": round(run["direct_records_per_s"]),
            "writer_over_direct": round(
                run["writer_records_per_s"] / run["direct_records_per_s"], 3
            ),
        }
    from tierroute.settings import QueryLogConfig

    print("writer process...", file=sys.stderr)
    trickle = [sample_record(f"trickle-{i}") for i in range(args.trickle)]
    grouped = asyncio.run(_trickle_run(trickle, QueryLogConfig().commit_delay_s))
    single = asyncio.run(_trickle_run(trickle, 0.0))
    result["writer_process"] = {
        "records": args.trickle,
        "commit_delay_s": QueryLogConfig().commit_delay_s,
        "group_commit": grouped,
        "no_delay": single,
        "cpu_no_delay_over_group_commit": round(
            single["writer_cpu_us_per_record"] / max(0.1, grouped["writer_cpu_us_per_record"]), 2
        ),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{'store':11} {'submit us':>10} {'/floor':>7} {'writer rec/s':>13} "
            f"{'direct rec/s':>13} {'writer/direct':>14}"
        )
        for kind, row in result["stores"].items():
            if "skipped" in row:
                print(f"{kind:11} skipped: {row['skipped']}")
                continue
            print(
                f"{kind:11} {row['submit_us']:10.3f} {row['submit_over_floor']:7.2f} "
                f"{row['writer_records_per_s']:13,} {row['direct_records_per_s']:13,} "
                f"{row['writer_over_direct']:14.3f}"
            )
        print(
            f"{args.records} records per store, batches of {args.batch_size}; submit floor "
            f"(locked deque append) {floor_us:.3f} us/record"
        )
        proc = result["writer_process"]
        for name in ("group_commit", "no_delay"):
            row = proc[name]
            print(
                f"writer process, {name}: {row['writer_cpu_us_per_record']} us CPU/record, "
                f"{row['transactions']} transactions ({row['records_per_transaction']}/each)"
            )
        print(f"no delay / group commit CPU: {proc['cpu_no_delay_over_group_commit']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
