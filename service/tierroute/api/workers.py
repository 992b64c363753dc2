"""`tierroute serve --workers N`: N server processes on one port, one query-log writer.

The parent process (the supervisor) serves no calls. It starts the query-log writer process,
then N worker processes, each a whole `TierRouteServer` (its own model sessions, event loop
and GIL) bound to the same port with SO_REUSEPORT, so the kernel spreads connections over
them. Each worker sends its query-log records to the one writer process.

The workers share a run directory with the supervisor:

- `group.json`, written by the supervisor: how many workers there are and which of them
  are serving. Every worker reports the service's health (the "" and TierRouter names)
  SERVING only while all N are, so a health check answers for the whole group whichever
  worker it lands on; `<TierRouter>/worker/<slot>` names report each worker.
- `model.json`, written by the worker that served a ReloadModel or RollbackModel call (or
  whose registry watcher swapped): the version now served and its bundle directory. The
  other workers poll it and load that version too (`ModelReloader.follow`); a worker that
  starts later (a restart after a crash) follows it before it reports ready.

SIGTERM or SIGINT to the supervisor: every worker gets SIGTERM and drains (NOT_SERVING,
drain delay, grace period, its query-log client's acknowledgements), then the writer
process drains to the database. A worker or the writer that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

from grpc_health.v1 import health_pb2

from tierroute import observability
from tierroute.api.health import SERVICE_NAME
from tierroute.api.preflight import check_paths
from tierroute.api.server import TierRouteServer
from tierroute.errors import ConfigError, TierrouteError
from tierroute.model import ModelSwap
from tierroute.querylog import WriterProcess
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

GROUP_FILE = "group.json"
MODEL_FILE = "model.json"
# How often a worker looks at the group's files: a reload reaches the siblings this fast.
POLL_S = 0.2
START_TIMEOUT_S = 180.0
# A worker that keeps dying right after start is not restarted for ever.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def worker_health_name(slot: int) -> str:
    """The health service name that reports worker `slot` of a group."""
    return f"{SERVICE_NAME}/worker/{slot}"


def default_workers(settings: Settings) -> int:
    """`server.workers`, or the number of cores this process may run on."""
    if settings.server.workers:
        return settings.server.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# -- the supervisor ---------------------------------------------------------------------------


class WorkerGroup:
    """The supervisor: starts, watches, restarts and stops the workers and the writer."""

    def __init__(
        self,
        settings: Settings,
        n: int,
        host: str | None,
        port: int | None,
        environ: Mapping[str, str],
        *,
        http_port: int | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError("--workers must be at least 1")
        if settings.querylog.enabled and settings.querylog.writer != "process":
            raise ConfigError(
                "querylog.writer = 'thread' serves one process only; use --workers 1 or the "
                "writer process (querylog.writer = 'process')"
            )
        self.settings = settings
        self.n = n
        self.host = host or settings.server.host
        self._port = settings.server.port if port is None else port
        # The HTTP endpoint: --http-port (0: a free one) or http.port (0: off), one port
        # for every worker as the gRPC one is.
        self._http_wanted = http_port is not None or settings.http.port != 0
        self._http_port = settings.http.port if http_port is None else http_port
        self.http_host = settings.http.host or self.host
        self.http_port = 0
        self._reserved_http: socket.socket | None = None
        self._environ = dict(environ)
        self._context = multiprocessing.get_context("spawn")
        self.run_dir = Path(tempfile.mkdtemp(prefix="tierroute-"))
        self.writer: WriterProcess | None = None
        if settings.querylog.enabled:
            self.writer = WriterProcess(
                settings.querylog,
                self.run_dir,
                keep_shadow_text=settings.shadow.keeps_text,
            )
        self._workers: dict[int, Any] = {}
        self._pipes: dict[int, Connection] = {}
        self._ready: set[int] = set()
        self._restarts: list[float] = []
        self._reserved: socket.socket | None = None
        self._stopped = False
        self.port = 0

    def _reserve_port(self) -> int:
        self._reserved = _reserve(self.host, self._port, "")
        port: int = self._reserved.getsockname()[1]
        if self._http_wanted:
            self._reserved_http = _reserve(self.http_host, self._http_port, "for HTTP ")
            self.http_port = self._reserved_http.getsockname()[1]
        return port

    def start(self) -> int:
        """Start the writer and every worker; the bound port once all of them serve."""
        try:
            # Every file and directory first, as a lone server does: one line per problem.
            check_paths(self.settings, model_injected=False)
            self.port = self._reserve_port()
            self._write_group(stopping=False)
            if self.writer is not None:
                self.writer.start()
            for slot in range(self.n):
                self._spawn(slot)
            deadline = time.monotonic() + START_TIMEOUT_S
            while len(self._ready) < self.n:
                if not self._await_ready(deadline):
                    raise ConfigError(f"workers did not start within {START_TIMEOUT_S} s")
            # Each worker says when it has seen the whole group ready (health SERVING), so
            # that the line `serve` prints means a health check answers SERVING.
            for slot, conn in self._pipes.items():
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise ConfigError(f"worker {slot} did not report SERVING in time")
                conn.recv()
        except BaseException:
            self.stop()
            raise
        return self.port

    def _spawn(self, slot: int) -> None:
        parent, child = self._context.Pipe(duplex=False)
        spec = WorkerSpec(
            settings=self.settings,
            host=self.host,
            port=self.port,
            environ=self._environ,
            slot=slot,
            run_dir=self.run_dir,
            querylog_address=None if self.writer is None else self.writer.address,
            log_level=logging.getLogger().level,
            http_port=self.http_port if self._http_wanted else None,
            workers=self.n,
        )
        process = self._context.Process(
            target=worker_main, args=(spec, child), name=f"tierroute-worker-{slot}"
        )
        process.start()
        child.close()
        self._workers[slot], self._pipes[slot] = process, parent
        logger.info("worker %s started (pid %s)", slot, process.pid)

    def _await_ready(self, deadline: float) -> bool:
        pipes = {conn: slot for slot, conn in self._pipes.items() if slot not in self._ready}
        ready = wait(list(pipes), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        for handle in ready:
            conn = cast("Connection", handle)
            slot = pipes[conn]
            try:
                status, detail = conn.recv()
            except EOFError:
                status, detail = "error", f"worker {slot} exited during start-up"
            if status != "ready":
                raise ConfigError(str(detail))
            self._ready.add(slot)
        self._write_group(stopping=False)
        return True

    def _write_group(self, *, stopping: bool) -> None:
        _write_json(
            self.run_dir / GROUP_FILE,
            {"workers": self.n, "ready": sorted(self._ready), "stopping": stopping},
        )

    def supervise(self, stop: Connection) -> None:
        """Watch the processes until `stop` is readable; restart whatever dies meanwhile."""
        while True:
            handles: dict[Any, Any] = {stop: "stop"}
            for slot, process in self._workers.items():
                handles[process.sentinel] = ("worker", slot)
                if slot not in self._ready:
                    handles[self._pipes[slot]] = ("ready", slot)
            if self.writer is not None and self.writer.sentinel is not None:
                handles[self.writer.sentinel] = ("writer", 0)
            for handle in wait(list(handles)):
                what = handles[handle]
                if what == "stop":
                    return
                self._on_event(*what)

    def _on_event(self, kind: str, slot: int) -> None:
        if kind == "ready":
            with contextlib.suppress(ConfigError):
                self._await_ready(time.monotonic())
            return
        if kind == "writer" and self.writer is not None:
            logger.error("query log writer process died; starting it again")
            self._count_restart()
            self.writer.start()
            return
        process = self._workers[slot]
        process.join(1)
        logger.error("worker %s (pid %s) died with exit code %s; starting it again",
                     slot, process.pid, process.exitcode)  # fmt: skip
        self._ready.discard(slot)
        self._write_group(stopping=False)
        self._count_restart()
        self._spawn(slot)

    def _count_restart(self) -> None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            raise ConfigError(
                f"more than {MAX_RESTARTS} process restarts within {RESTART_WINDOW_S:.0f} s; "
                "giving up (see the log for why they died)"
            )

    def forward(self, signum: int) -> None:
        """Send `signum` to every running worker (SIGHUP: reload tokens and tenants)."""
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def stop(self) -> None:
        """SIGTERM every worker and wait for its drain; then stop the writer. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._write_group(stopping=True)
        s = self.settings
        budget = s.server.drain_delay_s + s.server.grace_period_s + s.querylog.close_timeout_s
        for process in self._workers.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + budget + 10.0
        for slot, process in self._workers.items():
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                logger.error("worker %s did not stop in time; killing it", slot)
                process.kill()
                process.join(5)
        self._workers.clear()
        for conn in self._pipes.values():
            conn.close()
        self._pipes.clear()
        if self.writer is not None:
            self.writer.stop()
        for sock in (self._reserved, self._reserved_http):
            if sock is not None:
                sock.close()
        self._reserved = self._reserved_http = None
        shutil.rmtree(self.run_dir, ignore_errors=True)


def run_group(
    settings: Settings,
    n: int,
    host: str | None,
    port: int | None,
    environ: Mapping[str, str],
    *,
    http_port: int | None = None,
) -> int:
    """`serve --workers N` (N > 1): supervise until SIGTERM or SIGINT; the exit code."""
    group = WorkerGroup(settings, n, host, port, environ, http_port=http_port)
    stop_read, stop_write = multiprocessing.Pipe(duplex=False)

    def on_signal(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            stop_write.send(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # SIGHUP reloads the tokens and tenants files in every worker, as in a lone server.
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: group.forward(signal.SIGHUP))
    try:
        bound = group.start()
        # The same line as a lone server's: scripts read the port at its end.
        logger.info("%s workers serving", n)
        if group.http_port:
            print(f"tierroute serving HTTP on {group.http_host}:{group.http_port}", flush=True)
        print(f"tierroute serving on {group.host}:{bound}", flush=True)
        group.supervise(stop_read)
        logger.info("shutting down %s workers", n)
    finally:
        group.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# -- a worker ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (pickled to the spawned process)."""

    settings: Settings
    host: str
    port: int
    environ: Mapping[str, str]
    slot: int
    run_dir: Path
    querylog_address: Path | None
    log_level: int
    # The HTTP endpoint's port, shared by the group (None: off).
    http_port: int | None = None
    # Worker processes in the group: live labelling's budget is shared out among them.
    workers: int = 1


def worker_main(spec: WorkerSpec, ready: Connection) -> None:
    """One worker process: serve until SIGTERM, then drain."""
    # The supervisor relays Ctrl-C as SIGTERM, once every worker can take it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level or logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s [worker {spec.slot}]: %(message)s",
    )
    try:
        asyncio.run(_serve_worker(spec, ready))
    except TierrouteError as exc:
        # Start-up failures (a bad model, a port in use) travel to the supervisor as one line.
        with contextlib.suppress(OSError):
            ready.send(("error", str(exc)))
    except Exception as exc:
        logger.exception("worker %s failed", spec.slot)
        with contextlib.suppress(OSError):
            ready.send(("error", f"worker {spec.slot} failed: {exc}"))


def worker_settings(settings: Settings, slot: int, workers: int) -> Settings:
    """One worker's settings: its own scrape port (the configured one plus its slot) and its
    share of live labelling's budget, so the group never passes the budget."""
    if settings.telemetry.prometheus_port:
        telemetry = dataclasses.replace(
            settings.telemetry, prometheus_port=settings.telemetry.prometheus_port + slot
        )
        settings = dataclasses.replace(settings, telemetry=telemetry)
    if settings.shadow.label_rate > 0 and workers > 1:
        shadow = dataclasses.replace(
            settings.shadow, label_budget_usd=settings.shadow.label_budget_usd / workers
        )
        settings = dataclasses.replace(settings, shadow=shadow)
    return settings


async def _serve_worker(spec: WorkerSpec, ready: Connection) -> None:
    slot = spec.slot
    settings = worker_settings(spec.settings, slot, spec.workers)
    tel = observability.setup(settings, spec.environ)
    try:
        server = TierRouteServer(
            settings,
            environ=spec.environ,
            tracer_provider=tel.tracer_provider,
            meter_provider=tel.meter_provider,
            querylog_address=spec.querylog_address,
            worker_slot=slot,
            reuse_port=True,
        )
        # http_port 0 would pick a free port per worker: the group reserved one for all.
        await server.start(spec.host, spec.port, http_port=spec.http_port)
        stop = asyncio.Event()
        link = GroupLink(
            server,
            slot,
            spec.run_dir,
            on_serving=lambda: ready.send(("serving", slot)),
            on_orphaned=stop.set,
        )
        await link.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload_files)
        ready.send(("ready", spec.port))
        await stop.wait()
        await link.stop()
        await server.stop(drain_s=settings.server.drain_delay_s)
    finally:
        await asyncio.to_thread(tel.shutdown)


class GroupLink:
    """A worker's view of its group: the group's health, and sibling workers' model swaps."""

    def __init__(
        self,
        server: TierRouteServer,
        slot: int,
        run_dir: Path,
        *,
        on_serving: Callable[[], None] | None = None,
        on_orphaned: Callable[[], None] | None = None,
    ) -> None:
        self._server = server
        self._slot = slot
        # Told once, the first time the whole group serves; and when the supervisor is gone
        # (killed: nobody would stop this worker otherwise).
        self._on_serving = on_serving
        self._on_orphaned = on_orphaned
        self._parent = os.getppid()
        self._group_file = run_dir / GROUP_FILE
        self._model_file = run_dir / MODEL_FILE
        self._marks: dict[Path, tuple[int, int] | None] = {}
        self._group_serving: bool | None = None
        self._told_serving = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow a swap made before this worker started, then watch the group's files."""
        models = self._server.models
        if models is not None:
            models.announce = self._announce
        await self._poll()
        self._task = asyncio.create_task(self._watch(), name="tierroute-group-link")

    async def stop(self) -> None:
        """Stop watching (the server's own shutdown reports NOT_SERVING)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    def _announce(self, swap: ModelSwap, source: Path | None) -> None:
        _write_json(
            self._model_file,
            {
                "version": swap.version,
                "source": None if source is None else str(source),
                "by": self._slot,
                "at_ns": time.time_ns(),
            },
        )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            if os.getppid() != self._parent and self._on_orphaned is not None:
                logger.warning("supervisor gone; worker %s stopping", self._slot)
                self._on_orphaned()
                return
            try:
                await self._poll()
            except OSError as exc:
                logger.error("worker group files unreadable: %s", exc)

    def _changed(self, path: Path) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        mark = (stat.st_mtime_ns, stat.st_ino)
        if self._marks.get(path) == mark:
            return False
        self._marks[path] = mark
        return True

    async def _poll(self) -> None:
        if self._changed(self._model_file):
            pointer = _read_json(self._model_file)
            models = self._server.models
            if pointer is not None and models is not None and pointer.get("by") != self._slot:
                source = pointer.get("source")
                await models.follow(
                    str(pointer["version"]), None if source is None else Path(source)
                )
        if self._changed(self._group_file):
            group = _read_json(self._group_file)
            if group is not None:
                await self._server_health(group)

    async def _server_health(self, group: Mapping[str, Any]) -> None:
        serving = not group.get("stopping") and len(group.get("ready", ())) >= group["workers"]
        if serving != self._group_serving:
            self._group_serving = serving
            await self._server.set_serving(serving)
            if serving and not self._told_serving and self._on_serving is not None:
                self._told_serving = True
                with contextlib.suppress(OSError):
                    self._on_serving()
        for slot in range(int(group["workers"])):
            up = slot in group.get("ready", ()) or slot == self._slot
            await self._server.set_health_of(
                worker_health_name(slot), SERVING if up else NOT_SERVING
            )


__all__ = [
    "GroupLink",
    "WorkerGroup",
    "WorkerSpec",
    "default_workers",
    "run_group",
    "worker_health_name",
]


def _reserve(host: str, port: int, what: str) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT (port 0: one port for all workers).
    It never listens, so the kernel hands it no connection; it only keeps the number ours."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen {what}on {host}:{port}: the port is in use or the address is not local"
        ) from exc
    return sock
