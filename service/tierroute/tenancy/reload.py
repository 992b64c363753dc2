"""Files that reload without a restart: checked for changes every few seconds and on SIGHUP.

A `WatchedFile` notices a change by the file's identity (device, inode, size, modification
time), loads it with its loader and hands the result to its `apply`; a file that does not
load (unreadable, malformed) is logged and the previous contents stay in use. Calls in
flight are not disturbed: `apply` swaps one reference, and each call reads it once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from tierroute.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_Identity = tuple[int, int, int, int] | None


def _identity(path: Path) -> _Identity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class WatchedFile(Generic[T]):
    """One file named by `setting`, loaded by `load` and applied by `apply` on change."""

    def __init__(
        self, path: Path, setting: str, load: Callable[[Path], T], apply: Callable[[T], None]
    ) -> None:
        self.path = path
        self.setting = setting
        self._load = load
        self._apply = apply
        self._seen = _identity(path)
        self.reloads = 0
        self.failures = 0

    def check(self, *, force: bool = False) -> bool:
        """Reload when the file changed (or always, with `force`); whether it was applied."""
        seen = _identity(self.path)
        if not force and seen == self._seen:
            return False
        self._seen = seen
        try:
            value = self._load(self.path)
        except ConfigError as exc:
            self.failures += 1
            logger.warning("%s not reloaded, keeping the previous contents: %s", self.setting, exc)
            return False
        self._apply(value)
        self.reloads += 1
        logger.info("%s reloaded from %s", self.setting, self.path)
        return True


class Reloader:
    """Checks its files every `poll_s` seconds (0: only when asked, as on SIGHUP)."""

    def __init__(self, files: Sequence[WatchedFile[Any]], poll_s: float) -> None:
        self.files = tuple(files)
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def reload_all(self) -> None:
        """Reload every file now, changed or not (SIGHUP)."""
        for watched in self.files:
            watched.check(force=True)

    def start(self) -> None:
        """Start polling, when there is anything to poll."""
        if self.files and self._poll_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="tierroute-file-reloader")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            for watched in self.files:
                # A stat per file and poll; loading happens only on a change.
                watched.check()

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
