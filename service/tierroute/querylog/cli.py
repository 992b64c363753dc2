"""`tierroute report`: the query log's traffic, cost and quality figures, per tier and model.

`__main__` calls `add_report_parser(subparsers)`; the parsed namespace may carry the
process's `settings` (set with `set_defaults`), otherwise they are read from the
environment when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from tierroute.errors import ConfigError
from tierroute.querylog.records import utc_now
from tierroute.querylog.report import Report, ReportBuilder, format_table
from tierroute.querylog.store import QueryLogError, open_store, redact_url
from tierroute.settings import Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """A start time from an ISO date or datetime (UTC unless it says) or a duration ago.

    Durations are a number and one of s, m, h, d, w: `7d` is seven days before `now`.
    """
    match = _DURATION.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r} is neither an ISO date/datetime nor a duration like 7d or 12h"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def add_report_parser(subparsers: Any) -> None:
    """Register `report` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="per-tier and per-model figures from the query log",
        description=(
            "Query count, share of traffic, average and total cost, average rating, p95 "
            "tokens and escalation rate per tier and per model, and the cheap-tier "
            "opportunity, from the query log."
        ),
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="sqlite:///PATH or postgresql://... (default: TIERROUTE_DB_URL or the config)",
    )
    parser.add_argument(
        "--since",
        default=None,
        help="start of the window: ISO date/datetime (UTC) or a duration ago such as 7d, 12h",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_report)


async def build_report(url: str, tiers: tuple[str, ...], since: datetime | None) -> Report:
    """Read the log at `url` (never migrating it) and summarise it."""
    store = open_store(url)
    try:
        if await store.schema_version() == 0:
            raise QueryLogError(f"no query log at {store.display_url}")
        # Feedback first (it is small): each query is then counted as it streams past.
        builder = ReportBuilder(tiers, await store.fetch_feedback(since=since))
        async for record in store.iter_queries(since=since):
            builder.add(record)
    finally:
        await store.aclose()
    return builder.build(since=since)


def run_report(args: argparse.Namespace) -> int:
    """Print the report; 0 on success, 1 when the log cannot be read, 2 on bad arguments."""
    try:
        settings = getattr(args, "settings", None) or Settings.from_env(os.environ)
        url = args.db or settings.querylog.url.get()
        since = None if args.since is None else parse_since(args.since, utc_now())
    except ConfigError as exc:
        print(f"tierroute report: {exc}", file=sys.stderr)
        return 2
    tiers = tuple(t.name for t in settings.tiers)
    try:
        report = asyncio.run(build_report(url, tiers, since))
    except ConfigError as exc:
        print(f"tierroute report: {exc}", file=sys.stderr)
        return 2
    except QueryLogError as exc:
        print(f"tierroute report: cannot read {redact_url(url)}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=False))
    else:
        print(format_table(report))
    return 0
