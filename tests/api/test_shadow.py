"""Shadow mode through the real server: it serves as configured and, for the sampled share
of calls, logs with the text what the classifier policy would have decided."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import make_settings, running_server
from tierroute.querylog import QueryRecord, open_store
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

# The classifier would send this query to the top tier; the heuristic serves it cheap.
HARD = StaticScorer((0.05, 0.05, 0.9))
QUESTION = "What is the capital of France?"


def _settings(tmp_path: Path, rate: str) -> Settings:
    return make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "log.spool.jsonl"),
            "TIERROUTE_QUERYLOG_FLUSH_INTERVAL_S": "0.05",
            "TIERROUTE_ROUTING_DEFAULT_STRATEGY": "heuristic",
            "TIERROUTE_SHADOW_SAMPLE_RATE": rate,
        }
    )


async def _records(tmp_path: Path) -> list[QueryRecord]:
    store = open_store(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    try:
        return list(await store.fetch_queries())
    finally:
        await store.aclose()


async def test_a_shadow_sample_logs_the_policy_decision_with_the_text(tmp_path: Path) -> None:
    """Served by the configured heuristic; logged with the classifier's tier and the text."""
    async with running_server(_settings(tmp_path, "1.0"), scorer=HARD) as s:
        response = await s.stub.Route(pb.RouteRequest(query=QUESTION))
    (record,) = await _records(tmp_path)
    assert response.tier.name == record.chosen_tier == "cheap"
    assert record.strategy == "heuristic"
    assert record.metadata["shadow.tier"] == "expensive"
    assert record.metadata["shadow.strategy"] == "classifier"
    assert record.query_text == QUESTION


async def test_without_shadow_mode_no_text_and_no_caller_shadow_keys_are_kept(
    tmp_path: Path,
) -> None:
    """Shadow off: the text stays out, and a caller's own shadow.* metadata is dropped."""
    async with running_server(_settings(tmp_path, "0"), scorer=HARD) as s:
        await s.stub.Route(pb.RouteRequest(query=QUESTION, metadata={"shadow.tier": "cheap"}))
    (record,) = await _records(tmp_path)
    assert record.query_text is None
    assert "shadow.tier" not in record.metadata
