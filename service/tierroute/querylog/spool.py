"""The writer's local spool: an append-only JSON-lines file replayed in order.

Lines are appended at the end and consumed from a read offset, which is kept in a sidecar
file (`<spool>.offset`) so that a restart resumes where replay stopped. A line replayed
twice after a crash is harmless: stores skip ids they already hold. When every line is
consumed the file is truncated. Lines that can never be stored go to `<spool>.rejected`.
One process owns a spool at a time (an exclusive `flock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from tierroute.errors import ConfigError

logger = logging.getLogger(__name__)


class Spool:
    """An append-only line file with a persisted read offset; thread-safe appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        self.rejected_path = path.with_name(path.name + ".rejected")
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._offset = 0
        self._unsynced = False

    def open(self) -> None:
        """Open and lock the file, finish a torn last line, and load the read offset."""
        with self._lock:
            if self._file is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                handle.close()
                raise ConfigError(
                    f"query log spool {self.path} is in use by another process; "
                    "give each process its own querylog.spool_path"
                ) from exc
            size = os.fstat(handle.fileno()).st_size
            if size and not self._ends_with_newline(size):
                # A crash mid-append left a torn line; end it so the next line stays
                # whole. Replay sends the torn one to the rejected file.
                handle.write(b"\n")
                handle.flush()
                size += 1
            self._file = handle
            self._size = size
            self._offset = self._read_offset(size)

    def _ends_with_newline(self, size: int) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(size - 1)
            return fh.read(1) == b"\n"

    def _read_offset(self, size: int) -> int:
        try:
            offset = int(self.offset_path.read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0
        return offset if 0 <= offset <= size else 0

    @property
    def is_open(self) -> bool:
        """Whether the spool is open (and locked by this process)."""
        return self._file is not None

    def pending(self) -> bool:
        """Whether lines wait to be replayed."""
        with self._lock:
            return self._offset < self._size

    def append(self, lines: list[str], *, sync: bool) -> None:
        """Append whole lines; with `sync`, fsync before returning. OSError when it fails."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
        with self._lock:
            if self._file is None:
                raise OSError(f"spool {self.path} is not open")
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
            self._unsynced = self._unsynced or not sync
            fd = self._file.fileno()
        if sync:
            # Outside the lock: a submit spilling meanwhile never waits for the disk.
            os.fsync(fd)

    @property
    def needs_sync(self) -> bool:
        """Whether lines were appended without an fsync since the last one."""
        return self._unsynced

    def sync(self) -> None:
        """fsync lines appended without `sync` (spills from the request path)."""
        with self._lock:
            fd = None if self._file is None or not self._unsynced else self._file.fileno()
            self._unsynced = False
        if fd is not None:
            os.fsync(fd)

    def read(self, max_lines: int, start: int | None = None) -> tuple[list[bytes], int]:
        """Up to `max_lines` whole lines from the read offset (or from `start`, a line
        boundary past it), and the offset after them."""
        with self._lock:
            offset, size = self._offset, self._size
        if start is not None:
            offset = max(offset, start)
        lines: list[bytes] = []
        with self.path.open("rb") as fh:
            fh.seek(offset)
            while len(lines) < max_lines and offset < size:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break
                lines.append(line[:-1])
                offset += len(line)
        return lines, offset

    def consume(self, offset: int) -> None:
        """Mark everything before `offset` as stored; truncate once everything is."""
        with self._lock:
            self._offset = offset
            if self._file is not None and self._offset >= self._size:
                os.ftruncate(self._file.fileno(), 0)
                self._size = self._offset = 0
                with contextlib.suppress(FileNotFoundError):
                    self.offset_path.unlink()
                return
        # Not fsynced: after a crash, replaying a few stored lines again is harmless.
        tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
        tmp.write_text(str(offset), encoding="ascii")
        tmp.replace(self.offset_path)

    def reject(self, lines: list[str]) -> None:
        """Keep lines the database refused, fsynced, in the rejected file."""
        if not lines:
            return
        with self.rejected_path.open("ab") as fh:
            fh.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        """fsync, unlock and close the file."""
        with self._lock:
            handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
            handle.close()
