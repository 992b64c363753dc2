"""Start-up checks of every file and directory the server will read or write.

Each problem becomes one `ConfigError` line naming the path, what is wrong with it and the
setting to change (with its environment variable), before anything is started: a
read-only working directory (the image's filesystem mounted read-only) that cannot hold the
query-log spool fails here, not in a traceback from the writer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tierroute.errors import ConfigError
from tierroute.querylog.factory import sqlite_path
from tierroute.settings import Settings


def _env(setting: str) -> str:
    return "TIERROUTE_" + setting.upper().replace(".", "_")


def _fail(what: str, path: Path, problem: str, setting: str) -> ConfigError:
    return ConfigError(
        f"{what} {path}: {problem}; set {setting} ({_env(setting)}) to a path that works"
    )


def _writable_file(path: Path, what: str, setting: str) -> None:
    """`path` can be created (its directory exists and takes new files) or appended to."""
    folder = path.parent if str(path.parent) else Path()
    where = folder.resolve()
    if not folder.is_dir():
        raise _fail(what, path, f"its directory {where} does not exist", setting)
    try:
        # A probe file proves the directory takes new files (SQLite also writes its
        # journal beside the database), which permission bits alone do not say for root.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tierroute-probe-"):
            pass
        if path.exists():
            with path.open("ab"):
                pass
    except OSError as exc:
        raise _fail(
            what, path, f"cannot write in {where} ({exc.strerror or exc})", setting
        ) from exc


def _readable_file(path: Path, what: str, setting: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _fail(what, path, f"cannot be read ({exc.strerror or exc})", setting) from exc


def _sqlite_target(url: str) -> Path | None:
    if url.split(":", 1)[0].lower() != "sqlite":
        return None
    return sqlite_path(url)


def check_paths(settings: Settings, *, model_injected: bool = False) -> None:
    """Raise ConfigError (one line) for the first file or directory that cannot work."""
    querylog = settings.querylog
    if querylog.enabled:
        _writable_file(querylog.spool_path, "the query-log spool", "querylog.spool_path")
        target = _sqlite_target(querylog.url.get())
        if target is not None:
            _writable_file(target, "the query-log database", "querylog.url")
    state = _sqlite_target(settings.tenancy.state_url.get())
    if state is not None:
        _writable_file(state, "the tenant state database", "tenancy.state_url")
    reads = (
        (settings.auth.tokens_file, "the tokens file", "auth.tokens_file"),
        (settings.tenancy.tenants_file, "the tenants file", "tenancy.tenants_file"),
        (settings.tls.cert_file, "the TLS certificate", "tls.cert_file"),
        (settings.tls.key_file, "the TLS key", "tls.key_file"),
        (settings.tls.client_ca_file, "the TLS client CA", "tls.client_ca_file"),
    )
    for path, what, setting in reads:
        if path is not None:
            _readable_file(path, what, setting)
    _check_models(settings, model_injected=model_injected)
    replay = settings.replay.data
    if replay is not None and _uses_replay(settings) and not replay.exists():
        raise _fail("the replay data", replay, "does not exist", "replay.data")


def _check_models(settings: Settings, *, model_injected: bool) -> None:
    routing = settings.routing
    registry = routing.registry_dir
    if registry is None:
        if not model_injected and not routing.model_dir.is_dir():
            raise _fail(
                "the router model directory",
                routing.model_dir,
                "does not exist",
                "routing.model_dir",
            )
        return
    if registry.is_dir():
        return
    if registry.exists():
        raise _fail("the model registry", registry, "is not a directory", "routing.registry_dir")
    # The registry is created on first use: its parent must take a new directory.
    try:
        with tempfile.TemporaryDirectory(dir=registry.parent, prefix=".tierroute-probe-"):
            pass
    except OSError as exc:
        raise _fail(
            "the model registry",
            registry,
            f"cannot be created ({exc.strerror or exc})",
            "routing.registry_dir",
        ) from exc


def _uses_replay(settings: Settings) -> bool:
    backend = settings.anthropic.backend
    return backend == "replay" or (backend == "auto" and not settings.anthropic.api_key)
