"""An asyncio event loop on virtual time, so simulated provider latency costs no real time.

`loop.time()` starts at 0 and only moves when every task is waiting on a timer: the loop
then jumps straight to the earliest one instead of sleeping. Everything built on the loop's
clock (`asyncio.sleep`, `asyncio.timeout`, the cascade's deadline when given `loop.time`)
sees consistent simulated time: parallel calls overlap, sequential calls add up. Real I/O
still works (it is polled without waiting), so thread hand-offs at shutdown behave.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Mapping
from typing import Any


class _VirtualSelector(selectors.BaseSelector):
    """Polls real file descriptors without blocking; a wait on timers advances the clock."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        self._real = selectors.DefaultSelector()
        self._advance = advance

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # Nothing is scheduled: only real I/O (a thread's wake-up) can move the loop on.
            return self._real.select(None)
        events = self._real.select(0)
        if not events and timeout > 0:
            self._advance(timeout)
        return events

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is simulated; pass it as a Runner's loop_factory."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def time(self) -> float:
        """Simulated seconds since the loop was created."""
        return self._virtual_now
