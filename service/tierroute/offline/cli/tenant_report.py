"""`tierroute report --tenant ID`: one tenant's spend against its budget, from the tenant
state the servers share (the query log's database)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from tierroute.errors import ConfigError, TenancyUnavailable
from tierroute.querylog.store import redact_url
from tierroute.settings import BUDGET_WINDOWS, Settings
from tierroute.tenancy import StateStore, TenantBook


def state_url(settings: Settings, override: str | None) -> str:
    """The tenant state's database: --db, else tenancy.state_url, else querylog.url."""
    url = override or settings.tenancy.state_url.get() or settings.querylog.url.get()
    if url == "memory":
        raise ConfigError(
            "the tenant state is kept in the server's memory (tenancy.state_url = memory); "
            "there is nothing to report from outside it"
        )
    return url


def _stamp(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def tenant_report(url: str, settings: Settings, tenant: str) -> dict[str, Any]:
    """The tenant's limits, its spend over its window and its last minute, as JSON."""
    path = settings.tenancy.tenants_file
    book = TenantBook.load(path) if path is not None else TenantBook.of(settings.tenants)
    limits = book.limits(tenant)
    window = limits.budget_window if limits is not None else "1d"
    budget = limits.budget_usd if limits is not None else 0.0
    store = StateStore.open(url, connect_timeout_s=settings.querylog.connect_timeout_s)
    try:
        spend = await store.spend(tenant, BUDGET_WINDOWS[window], budget)
        rate = await store.rate(tenant)
    finally:
        await store.aclose()
    now = time.time()
    return {
        "tenant": tenant,
        "configured": limits is not None,
        "budget_usd": budget,
        "budget_window": window,
        "on_budget_exhausted": limits.on_budget_exhausted if limits is not None else None,
        "spent_usd": round(spend.settled_usd, 8),
        "reserved_usd": round(spend.reserved_usd, 8),
        "total_usd": round(spend.total_usd, 8),
        "remaining_usd": round(max(budget - spend.total_usd, 0.0), 8) if budget else None,
        "calls_in_window": spend.calls,
        "over_budget": bool(budget) and spend.total_usd >= budget,
        "frees_at": _stamp(spend.frees_at),
        "requests_last_minute": rate.requests,
        "requests_per_minute": limits.requests_per_minute if limits is not None else 0,
        "tokens_last_minute": rate.tokens,
        "tokens_per_minute": limits.tokens_per_minute if limits is not None else 0,
        "as_of": _stamp(now),
    }


def format_tenant(report: dict[str, Any]) -> str:
    """The report as a few aligned lines."""
    budget = report["budget_usd"]
    lines = [f"tenant {report['tenant']}" + ("" if report["configured"] else " (no limits set)")]
    if budget:
        share = 100.0 * report["total_usd"] / budget
        lines.append(
            f"  spend   ${report['total_usd']:.4f} of ${budget:g} over {report['budget_window']} "
            f"({share:.1f} %; ${report['reserved_usd']:.4f} reserved by calls running)"
        )
        lines.append(
            f"  remains ${report['remaining_usd']:.4f}; on exhaustion: "
            f"{report['on_budget_exhausted']}"
        )
        if report["frees_at"] is not None:
            lines.append(f"  back under budget at {report['frees_at']}")
    else:
        lines.append(
            f"  spend   ${report['total_usd']:.4f} over {report['budget_window']} (no budget)"
        )
    lines.append(f"  calls   {report['calls_in_window']} model calls in the window")
    rpm, tpm = report["requests_per_minute"], report["tokens_per_minute"]
    lines.append(
        f"  minute  {report['requests_last_minute']} requests"
        + (f" of {rpm}" if rpm else "")
        + f", {report['tokens_last_minute']} tokens"
        + (f" of {tpm}" if tpm else "")
    )
    return "\n".join(lines)


def run_tenant_report(url: str | None, settings: Settings, tenant: str, *, as_json: bool) -> int:
    """Print one tenant's report; 0 on success, 1 when the state cannot be read, 2 on bad
    arguments."""
    try:
        target = state_url(settings, url)
        report = asyncio.run(tenant_report(target, settings, tenant))
    except ConfigError as exc:
        print(f"tierroute report: {exc}", file=sys.stderr)
        return 2
    except TenancyUnavailable as exc:
        print(f"tierroute report: cannot read {redact_url(target)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if as_json else format_tenant(report))
    return 0
