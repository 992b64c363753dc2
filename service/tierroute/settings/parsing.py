"""How raw TOML and environment values become settings: files read, tables merged, each
table built into its frozen section and each value coerced to its field's type; and
`Secret`, the value that never prints."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; call only where it is sent."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<empty>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def section_types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path} (TIERROUTE_CONFIG)") from exc
    except OSError as exc:
        raise ConfigError(
            f"configuration file {path} cannot be read ({exc.strerror}); check TIERROUTE_CONFIG"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def build(kind: type[Any], values: Any, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{key}")
        kwargs[key] = coerce(hints[key], raw, f"{where}.{key}")
    try:
        return kind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _as_bool(raw: Any) -> bool:
    if isinstance(raw, str):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return bool(raw)


# How a raw TOML or environment value becomes each scalar type a setting may have.
_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: _as_bool,
    int: int,
    float: float,
    Path: Path,
    Secret: lambda raw: Secret(str(raw)),
    str: str,
}


def coerce(hint: Any, raw: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or raw == "":
            return None
        return coerce(args[0], raw, where)
    try:
        if hint in _SCALARS:
            return _SCALARS[hint](raw)
        if origin is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(coerce(typing.get_args(hint)[0], i, where) for i in items if i != "")
        if origin is dict:
            return dict(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {raw!r} as {hint}") from exc
    return raw
