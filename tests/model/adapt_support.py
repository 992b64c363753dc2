"""What the adapt tests share: the shipped bundle's value policy as a registry's seed,
logged planned Cascades with made-up estimates over its actions, a real server whose query
log the test can flush, and `adapt` over a whole log."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.helpers import Running, running_server
from tierroute.model import ModelRegistry
from tierroute.model.adapt import AdaptResult, adapt
from tierroute.model.bundle import BUNDLE_FILES, OPTIONAL_FILES
from tierroute.model.value import parse_actions, top_action
from tierroute.querylog import QueryLogWriter, QueryRecord, open_store
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.records import ValuePlanRecord
from tierroute.settings import Settings

SHIPPED = Path(__file__).resolve().parents[2] / "model_export" / "bundle"


def shipped_version() -> str:
    """The shipped bundle's model version."""
    version: str = json.loads((SHIPPED / "metadata.json").read_text())["model_version"]
    return version


def shipped_actions() -> list[Any]:
    """The shipped value policy's actions."""
    doc = json.loads((SHIPPED / "thresholds.json").read_text())
    return list(parse_actions(doc["cascade"]["value"]["actions"], 3, "shipped"))


def copy_bundle(dest: Path, *, policy: str | None = "value") -> Path:
    """A copy of the shipped bundle; `policy=None` removes its value policy."""
    dest.mkdir(parents=True)
    for name in (*BUNDLE_FILES, *OPTIONAL_FILES):
        if (SHIPPED / name).is_file():
            shutil.copyfile(SHIPPED / name, dest / name)
    if policy is None:
        path = dest / "thresholds.json"
        doc = json.loads(path.read_text())
        doc["cascade"].pop("value")
        doc["cascade"]["policy"] = "thresholds"
        path.write_text(json.dumps(doc))
    return dest


def shipped_top() -> int:
    """The index of the shipped policy's "top tier, unjudged" action."""
    return top_action(shipped_actions(), 3)


def easy_plan(index: int, n_actions: int) -> ValuePlanRecord:
    """Estimates of an easy query: the cheap tier nearly as right as the top, far cheaper;
    the plan chose the top tier (what a price solved on a harder mix does)."""
    top = shipped_top()
    p = [0.9 + 0.001 * (index % 7)] * n_actions
    p[top] = 0.93
    cost = [0.0002 * (1 + a) for a in range(n_actions)]
    cost[top] = 0.004
    return {
        "p_correct": p,
        "cost_usd": cost,
        "action": top,
        "operating_point": "parity",
        "price_per_correct_usd": 0.29,
    }


def planned_records(n: int, *, version: str, prefix: str = "r") -> list[QueryRecord]:
    """`n` answered Cascades on the top tier with easy estimates, under model `version`."""
    actions = len(shipped_actions())
    return [
        sample_record(
            f"{prefix}-{i}",
            model_version=version,
            value_plan=easy_plan(i, actions),
            chosen_tier="expensive",
            final_tier="expensive",
        )
        for i in range(n)
    ]


def adapt_settings(db_url: str, registry: Path, **extra: str) -> Settings:
    """Default tiers and prices, this log and registry (seeded from the shipped bundle)."""
    environ = {
        "TIERROUTE_QUERYLOG_ENABLED": "false",
        "TIERROUTE_HTTP_PORT": "0",
        "TIERROUTE_DB_URL": db_url,
        "TIERROUTE_ROUTING_REGISTRY_DIR": str(registry),
        "TIERROUTE_MODEL_DIR": str(SHIPPED),
        **extra,
    }
    return Settings.from_env(environ)


@asynccontextmanager
async def logged_server(settings: Settings) -> AsyncIterator[tuple[Running, QueryLogWriter]]:
    """The real server with a query-log writer the test can flush."""
    writer = QueryLogWriter.from_config(settings.querylog)
    await writer.start()
    try:
        async with running_server(settings, querylog=writer, environ={}) as s:
            yield s, writer
    finally:
        await writer.close(10)


async def run_adapt(settings: Settings, *, dry_run: bool = False) -> AdaptResult:
    """`adapt` over the whole log, as `tierroute adapt --since all` runs it."""
    store = open_store(settings.querylog.url.get())
    registry = ModelRegistry.from_settings(settings)
    assert registry is not None
    try:
        return await adapt(store, registry, settings, since=None, min_decisions=1, dry_run=dry_run)
    finally:
        await store.aclose()
