"""The query-log writer in its own process: records cross the process boundary once each,
through the writer process crashing, being slow or gone at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import T0, numbered_records, read_all, stored_ids
from tests.querylog.test_writer import config as writer_config
from tierroute.errors import ConfigError
from tierroute.querylog import (
    FeedbackRecord,
    QueryLogClient,
    QueryLogWriter,
    WriterProcess,
    open_store,
    worker_spool_path,
)
from tierroute.querylog.doubles import ToggleProxy, with_port
from tierroute.querylog.process import _Pending
from tierroute.querylog.records import QueryRecord
from tierroute.querylog.spool import Spool
from tierroute.settings import QueryLogConfig, Secret


def config(tmp_path: Path, db: Path, **changes: object) -> QueryLogConfig:
    """The writer tests' configuration (fast retries, spool under tmp_path) on SQLite `db`."""
    values: dict[str, object] = {"url": Secret(f"sqlite:///{db}"), "close_timeout_s": 10.0}
    values.update(changes)
    return writer_config(tmp_path, **values)


def started(cfg: QueryLogConfig, run_dir: Path) -> WriterProcess:
    """A started writer process in `run_dir`."""
    run_dir.mkdir(exist_ok=True)
    process = WriterProcess(cfg, run_dir)
    process.start()
    return process


def client_for(cfg: QueryLogConfig, process: WriterProcess, slot: int = 0) -> QueryLogClient:
    """A client of `process` on serving slot `slot`'s spool."""
    return QueryLogClient(cfg, process.address, spool_path=worker_spool_path(cfg, slot))


@contextlib.asynccontextmanager
async def connected(cfg: QueryLogConfig, run_dir: Path) -> AsyncIterator[QueryLogClient]:
    """A started writer process in `run_dir` and a started client of it; on the way out
    the client closes (waiting for its acknowledgements) and the writer process stops."""
    process = started(cfg, run_dir)
    try:
        client = client_for(cfg, process)
        await client.start()
        yield client
        await client.close(timeout_s=10)
    finally:
        await asyncio.to_thread(process.stop)


async def test_records_cross_to_the_writer_process(sqlite_file: Path, tmp_path: Path) -> None:
    """Records and feedback sent by a client are stored by the writer process, once each."""
    cfg = config(tmp_path, sqlite_file)
    process = started(cfg, tmp_path / "run")
    try:
        client = client_for(cfg, process)
        await client.start()
        for record in numbered_records("p", 40):
            assert client.submit(record)
        assert client.submit_feedback(FeedbackRecord("p-3", ts=T0, rating=2))
        await client.wait_drained()
        await client.close(timeout_s=10)
    finally:
        assert await asyncio.to_thread(process.stop) == 0
    stats = client.stats()
    assert (stats.submitted, stats.acknowledged, stats.spilled, stats.lost) == (41, 41, 0, 0)
    assert await stored_ids(sqlite_file) == [f"p-{i}" for i in range(40)]


async def test_writer_process_killed_loses_and_doubles_nothing(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """SIGKILL of the writer mid-stream: after its restart every record is stored once."""
    cfg = config(tmp_path, sqlite_file)
    process = started(cfg, tmp_path / "run")
    client = client_for(cfg, process)
    await client.start()
    try:
        for record in numbered_records("k", 30):
            client.submit(record)
        process.kill()
        for record in numbered_records("k", 30, start=30):
            assert client.submit(record)
        process.start()
        for record in numbered_records("k", 30, start=60):
            client.submit(record)
        await client.wait_drained()
        await client.close(timeout_s=10)
    finally:
        await asyncio.to_thread(process.stop)
    # Nothing was acknowledged before the kill (the loop never ran): all of it went again.
    assert (client.stats().lost, client.stats().resent >= 30) == (0, True)
    assert await stored_ids(sqlite_file) == [f"k-{i}" for i in range(90)]


async def test_full_window_spills_to_the_client_spool(sqlite_file: Path, tmp_path: Path) -> None:
    """With no writer process, records beyond the window go to the client's own spool and
    are sent on once the writer is there."""
    cfg = config(tmp_path, sqlite_file, queue_size=5)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = WriterProcess(cfg, run_dir)
    client = client_for(cfg, process)
    await client.start()
    for record in numbered_records("s", 25):
        assert client.submit(record)
    assert (client.stats().window, client.stats().spilled) == (5, 20)
    process.start()
    try:
        await client.wait_drained()
        await client.close(timeout_s=10)
    finally:
        await asyncio.to_thread(process.stop)
    assert client.stats().replayed == 20
    assert not Spool(worker_spool_path(cfg, 0)).path.stat().st_size
    assert sorted(await stored_ids(sqlite_file)) == sorted(f"s-{i}" for i in range(25))


async def test_close_with_writer_gone_spools_and_next_client_sends_on(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """Unacknowledged records at shutdown are spooled; the slot's next client sends them."""
    cfg = config(tmp_path, sqlite_file)
    process = WriterProcess(cfg, tmp_path)
    first = client_for(cfg, process)
    await first.start()
    for record in numbered_records("c", 12):
        first.submit(record)
    await first.close(timeout_s=0.2)
    assert (first.stats().spilled, first.stats().lost) == (12, 0)
    process.start()
    try:
        second = client_for(cfg, process)
        await second.start()
        await second.wait_drained()
        await second.close(timeout_s=10)
    finally:
        await asyncio.to_thread(process.stop)
    assert await stored_ids(sqlite_file) == [f"c-{i}" for i in range(12)]


async def test_writer_process_drains_on_sigterm(sqlite_file: Path, tmp_path: Path) -> None:
    """SIGTERM right after the records are acknowledged: they are in the database."""
    cfg = config(tmp_path, sqlite_file, flush_interval_s=30.0)
    process = started(cfg, tmp_path / "run")
    client = client_for(cfg, process)
    await client.start()
    for record in numbered_records("t", 20):
        client.submit(record)
    await client.close(timeout_s=10)
    assert client.stats().acknowledged == 20
    assert await asyncio.to_thread(process.stop) == 0
    assert await stored_ids(sqlite_file) == [f"t-{i}" for i in range(20)]


async def test_has_request_is_answered_by_the_writer(sqlite_file: Path, tmp_path: Path) -> None:
    """A stored id is found through the writer process; an unknown one is not."""
    cfg = config(tmp_path, sqlite_file)
    process = started(cfg, tmp_path / "run")
    try:
        sender = client_for(cfg, process, slot=0)
        await sender.start()
        sender.submit(numbered_records("h", 1)[0])
        await sender.wait_drained()
        await sender.close(timeout_s=10)
        other = client_for(cfg, process, slot=1)
        await other.start()
        assert await other.has_request("h-0")
        assert not await other.has_request("h-0", tenant_id="someone-else")
        assert not await other.has_request("never-sent")
        await other.close(timeout_s=10)
    finally:
        await asyncio.to_thread(process.stop)


async def test_has_request_says_yes_without_a_writer(tmp_path: Path) -> None:
    """With the writer process unreachable, feedback is not refused as NOT_FOUND."""
    cfg = config(tmp_path, tmp_path / "q.sqlite3")
    client = client_for(cfg, WriterProcess(cfg, tmp_path))
    await client.start()
    assert await client.has_request("unknown", timeout_s=0.2)
    await client.close(timeout_s=0.1)


def test_second_writer_process_on_one_spool_fails_in_one_line(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """A writer process whose spool another holds fails start-up with a clear message."""
    cfg = config(tmp_path, sqlite_file)
    first = started(cfg, tmp_path / "a")
    try:
        (tmp_path / "b").mkdir()
        with pytest.raises(ConfigError, match="in use by another process"):
            WriterProcess(cfg, tmp_path / "b").start()
    finally:
        first.stop()


async def test_submit_after_close_is_counted_as_lost(tmp_path: Path) -> None:
    """A record submitted after close is refused and counted."""
    cfg = config(tmp_path, tmp_path / "q.sqlite3")
    client = client_for(cfg, WriterProcess(cfg, tmp_path))
    await client.start()
    await client.close(timeout_s=0.1)
    assert not client.submit(numbered_records("z", 1)[0])
    assert client.stats().lost == 1
    await asyncio.sleep(0)


async def _trickle(client: QueryLogClient, prefix: str, n: int) -> None:
    """Submit n records one loop turn and a millisecond apart, as requests would come."""
    for record in numbered_records(prefix, n):
        assert client.submit(record)
        await asyncio.sleep(0.001)


async def _trickled(
    cfg: QueryLogConfig, run_dir: Path, db: Path, prefix: str, n: int
) -> dict[str, Any]:
    """Trickle n records through a started writer process; its stats once all are
    acknowledged, after checking that each is stored once, in order."""
    async with connected(cfg, run_dir) as client:
        await _trickle(client, prefix, n)
        await client.wait_drained()
        stats = await client.writer_stats()
    assert stats is not None
    assert stats["written"] == n
    assert client.stats().acknowledged == n
    assert await stored_ids(db) == [f"{prefix}-{i}" for i in range(n)]
    return stats


async def test_records_arriving_one_by_one_are_committed_in_groups(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """Records sent one at a time share durable writes: within the commit delay the writer
    process gathers them, stores them in one transaction and acknowledges the last."""
    # The writer's own flush pass (every flush_interval_s) is kept out of the way.
    cfg = config(tmp_path, sqlite_file, commit_delay_s=1.0, batch_size=1000, flush_interval_s=30)
    stats = await _trickled(cfg, tmp_path / "run", sqlite_file, "g", 60)
    # 60 sends over about 60 ms: one 1 s group, a few on a very loaded machine; sent one
    # chunk each, without grouping they would take about 60.
    assert stats["stored_batches"] <= 10


async def test_without_commit_delay_each_read_is_its_own_write(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """commit_delay_s = 0: every chunk the writer reads is stored at once (the control for
    the test above: spaced records then take many transactions)."""
    cfg = config(tmp_path, sqlite_file, commit_delay_s=0.0, flush_interval_s=30)
    async with connected(cfg, tmp_path / "run") as client:
        for record in numbered_records("z", 20):
            assert client.submit(record)
            await client.flush()  # acknowledged before the next one is sent
        stats = await client.writer_stats()
    assert stats is not None
    assert (stats["written"], stats["stored_batches"]) == (20, 20)


async def test_records_of_one_send_delay_leave_in_one_write(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """send_delay_s: records submitted a loop turn and a millisecond apart go to the writer
    together; with commit_delay_s = 0 the writer stores each read at once, so one write
    shows as one transaction (20 with the records sent one by one, the test above)."""
    cfg = config(tmp_path, sqlite_file, commit_delay_s=0.0, send_delay_s=0.1, flush_interval_s=30)
    # About 20 ms of sends, well within the delay.
    stats = await _trickled(cfg, tmp_path / "run", sqlite_file, "s", 20)
    # One write; a read of it may come in two chunks.
    assert stats["stored_batches"] <= 2


async def test_a_batch_worth_ends_the_gathering(tmp_path: Path) -> None:
    """The group waits for the commit delay only until batch_size records have come; then
    the durable pass starts at once, and covers them all."""
    pending = _Pending(
        config(tmp_path, tmp_path / "unused.sqlite3", commit_delay_s=1.0, batch_size=3)
    )
    pending.add(1)
    pending.add(2)
    gathering = asyncio.create_task(pending.gather())
    await asyncio.sleep(0)
    assert not gathering.done()  # two of three: it waits
    pending.add(3)
    await asyncio.wait_for(gathering, timeout=10)  # the third ends it, not the delay
    assert pending.take() == 3
    # The next group starts empty and waits again.
    pending.add(4)
    again = asyncio.create_task(pending.gather())
    await asyncio.sleep(0)
    assert not again.done()
    pending.finish()  # the connection ends: whatever is pending goes now
    await asyncio.wait_for(again, timeout=10)
    assert pending.take() == 4
    pending.add(9, 2)
    pending.add(7)  # an older number counts, but never lowers the acknowledgement
    assert pending.take() == 9


@pytest.mark.postgres
async def test_sigterm_with_a_pass_hung_on_the_database_still_exits_cleanly(
    pg_url: str, tmp_path: Path
) -> None:
    """SIGTERM while a group's durable pass hangs on a stalled database and its client is
    still connected: the connection is cancelled at the drain timeout with the pass in it
    (its records go to the writer's spool), and the writer process exits by itself, 0,
    instead of waiting on the hung pass until it is killed."""
    target = urlsplit(pg_url)
    with ToggleProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        url = with_port(pg_url, proxy.port)
        cfg = config(
            tmp_path,
            tmp_path / "unused.sqlite3",
            url=Secret(url),
            close_timeout_s=1.0,
            commit_delay_s=0.0,
            flush_interval_s=3600,
        )
        process = started(cfg, tmp_path / "run")
        client = client_for(cfg, process)
        await client.start()
        try:
            assert client.submit(numbered_records("m", 1)[0])
            await client.wait_drained()  # migrated and reachable
            proxy.stall()
            for record in numbered_records("t", 10):
                assert client.submit(record)
            await asyncio.sleep(0.3)  # the group's pass is now waiting on the stalled server
            # stop() waits close_timeout_s + 5 s, then kills: a clean exit is 0.
            code = await asyncio.to_thread(process.stop)
        finally:
            await client.close(timeout_s=1)
        assert code == 0
        # Nothing lost: the writer spooled the hung batch, and the client its window.
        proxy.enable()
        second = QueryLogWriter(open_store(url), cfg)
        await second.start()
        await second.wait_drained()
        await second.close(timeout_s=30)
    stored = {r.request_id for r in await read_all(open_store(pg_url))}
    assert {f"t-{i}" for i in range(10)} | {"m-0"} <= stored


async def test_submits_from_threads_and_the_loop_are_all_acknowledged(
    sqlite_file: Path, tmp_path: Path
) -> None:
    """Records submitted from other threads while the loop submits its own leave in
    sequence order, so every one is acknowledged (an acknowledgement covers everything up to
    its number) and stored once."""
    cfg = config(tmp_path, sqlite_file)
    records = numbered_records("x", 400)
    async with connected(cfg, tmp_path / "run") as client:

        def submit_all(part: list[QueryRecord]) -> None:
            for record in part:
                assert client.submit(record)

        threads = [asyncio.to_thread(submit_all, records[i::4]) for i in range(3)]
        running = asyncio.gather(*threads)
        for record in records[3::4]:
            assert client.submit(record)
            await asyncio.sleep(0)
        await running
        async with asyncio.timeout(60):
            await client.wait_drained()
    assert (client.stats().acknowledged, client.stats().lost) == (400, 0)
    assert sorted(await stored_ids(sqlite_file)) == sorted(f"x-{i}" for i in range(400))
