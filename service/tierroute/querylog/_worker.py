"""A one-thread executor whose thread never holds up shutdown.

A database call can hang (a stalled server, a silent network). `ThreadPoolExecutor` threads
are joined at interpreter exit, so one stuck call would stop the process from exiting;
this worker's thread is a daemon, and `stopped()` lets the owner wait for it with a
deadline instead of joining it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonWorker(Executor):
    """Runs submitted calls one at a time, in order, on one daemon thread."""

    def __init__(self, name: str, on_exit: Callable[[], None] | None = None) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._on_exit = on_exit
        self._stopped: Future[None] = Future()
        self._lock = threading.Lock()
        self._shut = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; RuntimeError after shutdown."""
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("worker is shut down")
            if not self._thread.is_alive() and not self._stopped.done():
                self._thread.start()
            self._jobs.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                future, fn, args, kwargs = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # handed to the waiting caller
                    future.set_exception(exc)
        finally:
            if self._on_exit is not None:
                self._on_exit()
            self._stopped.set_result(None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the running call; queued calls are cancelled with `cancel_futures`."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            started = self._thread.is_alive()
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        if not started:
            self._stopped.set_result(None)
            return
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def stopped(self) -> Future[None]:
        """Resolves once the thread has finished (at once if it never started)."""
        return self._stopped
