"""Servers with tenants for the tenancy tests: a config file with `[tenants.<id>]` tables,
tenant state in a SQLite file (or the PostgreSQL a test names), scripted cheap answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import make_settings
from tierroute.providers.scripted import Reply
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.95, 0.03, 0.02))
CHEAP, MID, TOP = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"
# A cheap answer call asked for 1000 output tokens reserves about $0.005 (5 USD per 1M
# output tokens); answered with 900 it settles at $0.0045, within its worst case.
MAX_TOKENS = 1000
SPENT = Reply.answer("Paris", input_tokens=1, output_tokens=900)
COST = (1 * 1.0 + 900 * 5.0) / 1e6


def tenant_settings(folder: Path, tenants: str, **environ: str) -> Settings:
    """Settings with `tenants` (TOML tables) and the tenant state in `folder`."""
    config = folder / "tenants-config.toml"
    config.write_text(tenants)
    return make_settings(
        {
            "TIERROUTE_CONFIG": str(config),
            "TIERROUTE_TENANCY_STATE_URL": f"sqlite:///{folder / 'state.sqlite3'}",
            **environ,
        }
    )


def cheap_call(tenant: str = "acme", **fields: Any) -> pb.CascadeRequest:
    """A Cascade on the cheap tier, unjudged, asking for MAX_TOKENS output tokens."""
    fields.setdefault("query", "What is the capital of France?")
    fields.setdefault("start_tier", "cheap")
    fields.setdefault("judge_mode", pb.JUDGE_MODE_NEVER)
    fields.setdefault("max_output_tokens", MAX_TOKENS)
    return pb.CascadeRequest(tenant_id=tenant, **fields)
