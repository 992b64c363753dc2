"""Versioned schema migrations of the query log, one directory of SQL files per dialect.

A migration is `<dialect>/NNNN_name.sql`; NNNN is its version. Migrations only ever get
added: an applied file is never edited, so every database at version N has the same schema.
The stores apply the missing ones inside one locked transaction and record each in
`schema_migrations`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One versioned migration: its statements, in order."""

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements (our files use no dollar quoting or triggers)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        # sqlite3 knows where a statement ends, quotes and comments included.
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise ValueError("migration script ends with an unterminated statement")
    return statements


def load(dialect: str) -> list[Migration]:
    """Every migration shipped for `dialect` ("sqlite" or "postgresql"), by version."""
    folder = resources.files(__name__).joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(
                    version=int(match.group(1)),
                    name=match.group(2),
                    statements=tuple(split_statements(entry.read_text(encoding="utf-8"))),
                )
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or not found:
        raise ValueError(f"{dialect} migrations are missing or share a version: {versions}")
    return found
