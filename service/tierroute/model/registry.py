"""The versioned model registry on disk, and the server's hot reload and rollback from it.

Layout of a registry directory (`routing.registry_dir`)::

    ROOT/registry.json     {"format": 1, "promoted": V, "history": [V0, ..., V], "events": [...]}
    ROOT/.registry.lock    taken (fcntl.flock) by every change, so two processes never race
    ROOT/<version>/        a whole bundle: model.onnx, metadata.json, thresholds.json

`history` is the stack of promotions: promoting pushes, rolling back pops, so a second
rollback goes one further back. `events` is the append-only record of every change (seed,
promote, rollback) with its time and note. Every file is written beside its target and
renamed over it, and a version directory appears by one rename, so a reader never sees half
a registry or half a bundle. An empty registry takes `routing.model_dir` (by default the
bundled `model_export/bundle`) as its first version, the seed.

`ModelReloader` is the serving side: it loads and warms a version off the event loop, then
swaps it into the `Router` in one assignment, so calls in flight finish on the model they
started with and none is dropped. A version that fails to load leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierroute.errors import ConfigError, ModelLoadError, NotFound
from tierroute.model.bundle import (
    BUNDLE_FILES,
    METADATA_FILE,
    MODEL_FILE,
    OPTIONAL_FILES,
    THRESHOLDS_FILE,
)
from tierroute.outcomes import file_sha256

if TYPE_CHECKING:
    from tierroute.settings import Settings

logger = logging.getLogger(__name__)

REGISTRY_FORMAT = 1
REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
# A version names a directory: no separators, no dot-files, bounded.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def valid_version_name(version: str) -> bool:
    """Whether `version` can name a registry directory."""
    return bool(_VERSION.match(version))


def check_version_name(version: str) -> str:
    """`version` when it can name a registry directory; ConfigError otherwise."""
    if not _VERSION.match(version):
        raise ConfigError(
            f"model version {version[:140]!r} cannot name a registry directory: use letters, "
            "digits, '.', '_' and '-', at most 128 characters, not starting with '.'"
        )
    return version


def bundle_version(bundle: Path) -> str:
    """The model version a bundle's metadata.json records; ModelLoadError naming the file."""
    path = bundle / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"router model file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON: {exc}") from exc
    version = metadata.get("model_version") if isinstance(metadata, dict) else None
    if not isinstance(version, str) or not version:
        raise ModelLoadError(f"{path}: 'model_version' must be a non-empty string")
    return version


@dataclass(frozen=True)
class Event:
    """One change of the registry: what happened, to which version, when and why."""

    action: str  # "seed" | "promote" | "rollback"
    version: str
    previous: str | None
    at: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form kept in registry.json."""
        return {
            "action": self.action,
            "version": self.version,
            "previous": self.previous,
            "at": self.at,
            "note": self.note,
        }


@dataclass(frozen=True)
class RegistryState:
    """The promoted version, the promotion stack that rollback pops, and every event."""

    promoted: str | None = None
    history: tuple[str, ...] = ()
    events: tuple[Event, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of registry.json."""
        return {
            "format": REGISTRY_FORMAT,
            "promoted": self.promoted,
            "history": list(self.history),
            "events": [e.as_dict() for e in self.events],
        }

    @property
    def previous(self) -> str | None:
        """The version a rollback would restore, or None when there is none."""
        return self.history[-2] if len(self.history) >= 2 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


class ModelRegistry:
    """Model versions on disk, which one is promoted, and the history to roll back through.

    Every method is blocking file I/O: call it from a thread when on an event loop. Safe for
    several processes and threads at once: changes hold an exclusive `flock`, and reads see
    either the old or the new registry.json, never a mix.
    """

    def __init__(self, root: Path, *, seed: Path | None = None) -> None:
        self.root = root
        self.seed = seed

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry | None:
        """The registry `routing.registry_dir` names, seeded from `routing.model_dir`."""
        routing = settings.routing
        if routing.registry_dir is None or not str(routing.registry_dir):
            return None
        return cls(routing.registry_dir, seed=routing.model_dir)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    @property
    def registry_file(self) -> Path:
        """The registry.json path (the hot-reload watcher polls its modification time)."""
        return self.root / REGISTRY_FILE

    # -- reading ---------------------------------------------------------------------------

    def state(self) -> RegistryState:
        """The registry as stored now; an empty state when there is no registry.json yet."""
        path = self.registry_file
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return RegistryState()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable model registry: {exc}") from exc
        return _parse_state(data, path)

    def versions(self) -> list[str]:
        """Every version held, sorted by name."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _VERSION.match(p.name) and (p / METADATA_FILE).is_file()
        )

    def bundle_dir(self, version: str) -> Path:
        """The directory of `version`; NotFound when the registry does not hold it."""
        path = self.root / check_version_name(version)
        if not (path / METADATA_FILE).is_file():
            raise NotFound(f"model registry {self.root} holds no version {version!r}")
        return path

    def promoted(self) -> str:
        """The promoted version, seeding an empty registry first; ConfigError when none."""
        version = self.state().promoted or self.ensure_seeded()
        if version is None:
            raise ConfigError(f"model registry {self.root} is empty and has no seed bundle")
        return version

    def promoted_dir(self) -> Path:
        """The directory of the promoted version (seeding an empty registry first)."""
        return self.bundle_dir(self.promoted())

    # -- changing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[RegistryState]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / LOCK_FILE).open("a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    # Read under the lock: the state a change builds on is the latest one.
                    yield self.state()
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            # A read-only or full disk is the operator's to fix; say where, not a traceback.
            raise ConfigError(f"model registry {self.root}: {exc}") from exc

    def _save(self, state: RegistryState) -> None:
        content = json.dumps(state.as_dict(), indent=2, sort_keys=True) + "\n"
        _write_atomic(self.registry_file, content.encode())

    def ensure_seeded(self) -> str | None:
        """Add and promote the seed bundle when nothing is promoted; the promoted version."""
        if self.seed is None:
            return self.state().promoted
        with self._locked() as state:
            if state.promoted is not None:
                return state.promoted
            version = self._add_unlocked(self.seed)
            self._save(_pushed(state, "seed", version, f"seeded from {self.seed}"))
            logger.info("model registry %s seeded with %s", self.root, version)
            return version

    def add(self, bundle: Path) -> str:
        """Copy a bundle in as its metadata's version (idempotent); the version.

        ModelLoadError names a missing or inconsistent file; ConfigError when the registry
        already holds a different model under that version.
        """
        with self._locked():
            return self._add_unlocked(bundle)

    def _add_unlocked(self, bundle: Path) -> str:
        version = check_version_name(bundle_version(bundle))
        _check_bundle_files(bundle)
        target = self.root / version
        if target.exists():
            # A published version is immutable: the same files, or a refusal naming the first
            # that differs (a recalibrated thresholds.json or value.onnx included).
            for name in (*BUNDLE_FILES, *OPTIONAL_FILES):
                ours = file_sha256(target / name) if (target / name).is_file() else None
                theirs = file_sha256(bundle / name) if (bundle / name).is_file() else None
                if ours != theirs:
                    raise ConfigError(
                        f"model registry {self.root} already holds a different {version}: "
                        f"{target / name} differs from {bundle / name}"
                    )
            return version
        incoming = self.root / f".incoming-{uuid.uuid4().hex}"
        incoming.mkdir()
        try:
            for name in (*BUNDLE_FILES, *(n for n in OPTIONAL_FILES if (bundle / n).is_file())):
                shutil.copyfile(bundle / name, incoming / name)
                with (incoming / name).open("rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(incoming)
            # One rename publishes the whole bundle: readers see all of it or none.
            os.rename(incoming, target)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        _fsync_dir(self.root)
        logger.info("model registry %s: added %s", self.root, version)
        return version

    def promote(self, version: str, *, note: str = "") -> RegistryState:
        """Make `version` (already added) the promoted one; NotFound when it is not held.

        An empty registry is seeded first, so the seed stays in the history to roll back to.
        """
        self.bundle_dir(version)
        self.ensure_seeded()
        with self._locked() as state:
            if state.promoted == version:
                return state
            new = _pushed(state, "promote", version, note)
            self._save(new)
        logger.info("model registry %s: promoted %s (was %s)", self.root, version, state.promoted)
        return new

    def rollback(self, *, expect: str | None = None, note: str = "") -> RegistryState:
        """Pop the last promotion, restoring the one before it.

        ConfigError when there is nothing to roll back to, or when `expect` is given and
        another process promoted something else meanwhile.
        """
        with self._locked() as state:
            if expect is not None and state.promoted != expect:
                raise ConfigError(
                    f"model registry {self.root} changed meanwhile: {state.promoted} is "
                    f"promoted, not {expect}; nothing was rolled back"
                )
            previous = state.previous
            if previous is None or state.promoted is None:
                raise ConfigError(
                    f"model registry {self.root} has no earlier promotion to roll back to"
                )
            event = Event("rollback", previous, state.promoted, _now(), note)
            new = RegistryState(previous, state.history[:-1], (*state.events, event))
            self._save(new)
        logger.info("model registry %s: rolled back %s -> %s", self.root, event.previous, previous)
        return new


def _pushed(state: RegistryState, action: str, version: str, note: str) -> RegistryState:
    event = Event(action, version, state.promoted, _now(), note)
    return RegistryState(version, (*state.history, version), (*state.events, event))


def _check_bundle_files(bundle: Path) -> None:
    for name in BUNDLE_FILES:
        if not (bundle / name).is_file():
            raise ModelLoadError(f"router model file not found: {bundle / name}")
    metadata = json.loads((bundle / METADATA_FILE).read_text(encoding="utf-8"))
    recorded = metadata.get("onnx_sha256")
    actual = file_sha256(bundle / MODEL_FILE)
    if recorded != actual:
        # Refuse at the door what every server would refuse at load.
        raise ModelLoadError(
            f"{bundle / MODEL_FILE}: SHA-256 {actual} does not match {recorded!r} "
            f"recorded in {bundle / METADATA_FILE}"
        )
    _check_value_model(bundle)


def _check_value_model(bundle: Path) -> None:
    """A bundle whose Cascade policy is `value` must hold the value model it names."""
    try:
        thresholds = json.loads((bundle / THRESHOLDS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{bundle / THRESHOLDS_FILE}: not readable JSON: {exc}") from exc
    cascade = thresholds.get("cascade") if isinstance(thresholds, dict) else None
    if not isinstance(cascade, dict) or cascade.get("policy") != "value":
        return
    value = cascade.get("value")
    recorded = value.get("sha256") if isinstance(value, dict) else None
    path = bundle / OPTIONAL_FILES[0]
    if not path.is_file():
        raise ModelLoadError(f"value model file not found: {path} (named by {THRESHOLDS_FILE})")
    actual = file_sha256(path)
    if actual != recorded:
        raise ModelLoadError(
            f"{path}: SHA-256 {actual} does not match {recorded!r} recorded in "
            f"{bundle / THRESHOLDS_FILE}"
        )


def _parse_state(data: Any, path: Path) -> RegistryState:
    try:
        if data.get("format") != REGISTRY_FORMAT:
            raise ConfigError(f"{path}: format {data.get('format')!r} is not {REGISTRY_FORMAT}")
        promoted = data.get("promoted")
        history = tuple(str(v) for v in data.get("history", []))
        events = tuple(
            Event(
                action=str(e["action"]),
                version=str(e["version"]),
                previous=None if e.get("previous") is None else str(e["previous"]),
                at=str(e["at"]),
                note=str(e.get("note", "")),
            )
            for e in data.get("events", [])
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a model registry file: {exc!r}") from exc
    if promoted is not None and (not history or history[-1] != promoted):
        raise ConfigError(f"{path}: the promoted version is not the top of the history")
    return RegistryState(None if promoted is None else str(promoted), history, events)


# -- serving: load, warm, swap ---------------------------------------------------------------


def registry_summary(registry: ModelRegistry) -> Mapping[str, Any]:
    """What `tierroute models` and `tierroute rollback` print: versions, promoted, history."""
    state = registry.state()
    return {
        "registry": str(registry.root),
        "promoted": state.promoted,
        "previous": state.previous,
        "history": list(state.history),
        "versions": registry.versions(),
        "events": [e.as_dict() for e in state.events[-20:]],
    }
