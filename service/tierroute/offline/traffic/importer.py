"""`tierroute import`: a team's existing LLM log (JSON lines or CSV) into the query log.

Each row is one answered call. Fields (docs/own-traffic.md has the full format):

- `query` (text) or `messages` (a Messages-API list of {role, content}; the question is the
  last user turn's text, as the server routes it): required, one of the two;
- `model_used`, `cost_usd`, `tokens` (a number, or {"input": n, "output": m}),
  `user_rating` (1-5), `timestamp` (ISO-8601, UTC unless it says, or Unix seconds),
  `request_id` (else one is derived from the row, so importing a file twice adds nothing):
  all optional.

Imported calls are stored with their text (importing is the explicit opt-in
`querylog.store_text` is for served calls), as answered Cascade calls on the configured
tier whose model is `model_used` (none when no tier has it), so `tierroute report` gives
the traffic report for them; a rating becomes feedback. A bad row stops the import before
anything is written, with one line naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.querylog import FeedbackRecord, HopRecord, QueryRecord, Store, hash_query
from tierroute.querylog.records import utc_now
from tierroute.routing import query_type
from tierroute.settings import Settings

FIELDS = (
    "query",
    "messages",
    "model_used",
    "cost_usd",
    "tokens",
    "user_rating",
    "timestamp",
    "request_id",
)
BATCH = 500
SOURCE = "import"


class ImportFormatError(ConfigError):
    """A row of the imported file cannot be read; the message names file, line and field."""


@dataclass(frozen=True)
class ImportedRow:
    """One row, read and checked."""

    line: int
    request_id: str
    text: str
    model_used: str
    cost_usd: float | None
    input_tokens: int
    output_tokens: int
    rating: int | None
    ts: datetime


@dataclass
class ImportSummary:
    """What an import read and wrote."""

    path: str
    rows: int = 0
    queries: int = 0
    ratings: int = 0
    without_cost: int = 0
    unmatched_models: dict[str, int] = field(default_factory=dict)
    ignored_fields: list[str] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute import --json` prints."""
        return {
            "path": self.path,
            "rows": self.rows,
            "queries_written": self.queries,
            "ratings_written": self.ratings,
            "without_cost": self.without_cost,
            "models_matching_no_tier": dict(sorted(self.unmatched_models.items())),
            "ignored_fields": self.ignored_fields,
            "first_timestamp": self.first_ts,
            "last_timestamp": self.last_ts,
        }


def _fail(path: Path, line: int, name: str, why: str) -> ImportFormatError:
    return ImportFormatError(f"{path}:{line}: field '{name}': {why}")


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            b["text"]
            for b in content
            if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n".join(parts) if parts else None
    return None


def _question(row: Mapping[str, Any], path: Path, line: int) -> str:
    query = row.get("query")
    if query not in (None, ""):
        if not isinstance(query, str):
            raise _fail(path, line, "query", "must be text")
        if query.strip():
            return query
        raise _fail(path, line, "query", "is empty")
    messages = row.get("messages")
    if messages in (None, ""):
        raise _fail(path, line, "query", "missing: give 'query' or 'messages'")
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise _fail(path, line, "messages", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(messages, list) or not messages:
        raise _fail(path, line, "messages", "must be a non-empty list of {role, content}")
    for message in reversed(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise _fail(path, line, "messages", "every message needs 'role' and 'content'")
        if message["role"] == "user":
            text = _text_of(message.get("content"))
            if text and text.strip():
                return text
    raise _fail(path, line, "messages", "no user message with text")


def _number(row: Mapping[str, Any], name: str, path: Path, line: int) -> float | None:
    value = row.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise _fail(path, line, name, f"{value!r} is not a number") from exc
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise _fail(path, line, name, f"{value!r} must be a non-negative number")
    return number


def _tokens(row: Mapping[str, Any], path: Path, line: int) -> tuple[int, int]:
    value = row.get("tokens")
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _fail(path, line, "tokens", f"not valid JSON ({exc.msg})") from exc
    if isinstance(value, Mapping):
        unknown = set(value) - {"input", "output"}
        if unknown:
            raise _fail(path, line, "tokens", f"only 'input' and 'output', not {sorted(unknown)}")
        counts = [_number(value, k, path, line) for k in ("input", "output")]
        return int(counts[0] or 0), int(counts[1] or 0)
    total = _number(row, "tokens", path, line)
    # A single count covers the call; it is kept as input tokens (the report sums both).
    return (0, 0) if total is None else (int(total), 0)


def _rating(row: Mapping[str, Any], path: Path, line: int) -> int | None:
    value = _number(row, "user_rating", path, line)
    if value is None:
        return None
    if not value.is_integer() or not 1 <= value <= 5:
        raise _fail(path, line, "user_rating", f"{row.get('user_rating')!r} must be 1-5")
    return int(value)


def _timestamp(row: Mapping[str, Any], path: Path, line: int, now: datetime) -> datetime:
    value = row.get("timestamp")
    if value in (None, ""):
        return now
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise _fail(path, line, "timestamp", f"{value!r} is out of range") from exc
    text = str(value).strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (OverflowError, OSError, ValueError) as exc:
        raise _fail(
            path, line, "timestamp", f"{value!r} is neither ISO-8601 nor Unix seconds"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def read_row(raw: Mapping[str, Any], path: Path, line: int, now: datetime) -> ImportedRow:
    """Check one row; ImportFormatError names the line and field of the first problem."""
    text = _question(raw, path, line)
    model = raw.get("model_used")
    if model is not None and not isinstance(model, str):
        raise _fail(path, line, "model_used", "must be text")
    given = raw.get("request_id")
    if given not in (None, "") and (not isinstance(given, str) or len(given) > 128):
        raise _fail(path, line, "request_id", "must be text of at most 128 characters")
    inp, out = _tokens(raw, path, line)
    ts = _timestamp(raw, path, line, now)
    # Derived from the row itself: importing the same file again writes nothing new.
    digest = hashlib.sha256(
        json.dumps({k: raw.get(k) for k in FIELDS}, sort_keys=True, default=str).encode()
    ).hexdigest()
    return ImportedRow(
        line=line,
        request_id=str(given) if given else f"import-{digest[:32]}",
        text=text,
        model_used=model or "",
        cost_usd=_number(raw, "cost_usd", path, line),
        input_tokens=inp,
        output_tokens=out,
        rating=_rating(raw, path, line),
        ts=ts,
    )


def _raw_rows(path: Path, fmt: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise ImportFormatError(f"{path}:1: the CSV file has no header row")
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
            return
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{path}:{line}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ImportFormatError(f"{path}:{line}: a row must be a JSON object")
            yield line, row


def file_format(path: Path, given: str | None) -> str:
    """ "jsonl" or "csv": as given, else from the file name."""
    if given:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ConfigError(f"{path}: cannot tell JSONL from CSV by its name; pass --format")


def read_file(path: Path, fmt: str, summary: ImportSummary) -> list[ImportedRow]:
    """Every row of the file, checked; the first bad row raises ImportFormatError."""
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    now = utc_now()
    rows = []
    ignored: set[str] = set()
    try:
        for line, raw in _raw_rows(path, fmt):
            ignored.update(k for k in raw if k not in FIELDS)
            rows.append(read_row(raw, path, line, now))
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise ImportFormatError(f"{path}: not a readable CSV file ({exc})") from exc
    summary.ignored_fields = sorted(ignored)
    if not rows:
        raise ImportFormatError(f"{path}: no rows to import")
    return rows


def to_records(
    row: ImportedRow, settings: Settings, summary: ImportSummary
) -> tuple[QueryRecord, FeedbackRecord | None]:
    """The query record (and feedback) an imported row becomes."""
    tier = next((t for t in settings.tiers if t.model == row.model_used), None)
    if tier is None and row.model_used:
        summary.unmatched_models[row.model_used] = (
            summary.unmatched_models.get(row.model_used, 0) + 1
        )
    cost = row.cost_usd
    if cost is None and tier is not None and (row.input_tokens or row.output_tokens):
        cost = tier.cost_usd(row.input_tokens, row.output_tokens)
    if cost is None:
        summary.without_cost += 1
    hop: HopRecord = {
        "tier": tier.name if tier else "",
        "model": row.model_used,
        "role": "answer",
        "outcome": "ok",
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": cost or 0.0,
        "latency_ms": 0.0,
        "verdict": "",
        "issues": [],
        "attempt": 1,
        "speculative": False,
        "error_kind": "",
    }
    record = QueryRecord(
        request_id=row.request_id,
        kind="cascade",
        query_sha256=hash_query(row.text),
        query_chars=len(row.text),
        ts=row.ts,
        query_text=row.text,
        strategy=SOURCE,
        chosen_tier=tier.name if tier else "",
        final_tier=tier.name if tier else "",
        hops=[hop],
        total_cost_usd=cost or 0.0,
        query_type=query_type(row.text),
        metadata={"source": SOURCE, "model_used": row.model_used},
    )
    feedback = None
    if row.rating is not None:
        feedback = FeedbackRecord(
            request_id=row.request_id,
            ts=row.ts,
            rating=row.rating,
            feedback_id=f"{row.request_id}-rating",
        )
    return record, feedback


async def import_file(
    store: Store,
    path: Path,
    settings: Settings,
    *,
    fmt: str | None = None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> ImportSummary:
    """Read and check the whole file, then write it in batches (rows already stored are kept)."""
    summary = ImportSummary(str(path))
    rows = read_file(path, file_format(path, fmt), summary)
    summary.rows = len(rows)
    update = progress(len(rows)) if progress else None
    await store.migrate()
    for start in range(0, len(rows), BATCH):
        chunk: Sequence[ImportedRow] = rows[start : start + BATCH]
        queries, feedback = [], []
        for row in chunk:
            record, rating = to_records(row, settings, summary)
            queries.append(record)
            if rating is not None:
                feedback.append(rating)
        await store.write_batch(queries, feedback)
        summary.queries += len(queries)
        summary.ratings += len(feedback)
        if update:
            update(len(chunk))
    stamps = sorted(r.ts for r in rows)
    summary.first_ts, summary.last_ts = stamps[0].isoformat(), stamps[-1].isoformat()
    return summary


def format_summary(summary: ImportSummary) -> str:
    """The readable form of an import summary."""
    lines = [
        f"imported {summary.rows} rows from {summary.path} "
        f"({summary.first_ts} .. {summary.last_ts}): {summary.queries} calls with their "
        f"text, {summary.ratings} ratings",
    ]
    if summary.without_cost:
        lines.append(f"  {summary.without_cost} rows state no cost and could not be priced")
    for model, n in sorted(summary.unmatched_models.items()):
        lines.append(f"  {n} rows used {model!r}, which no configured tier serves")
    if summary.ignored_fields:
        lines.append(f"  ignored fields: {', '.join(summary.ignored_fields)}")
    lines.append("next: tierroute report, then tierroute label --sample N")
    return "\n".join(lines)
