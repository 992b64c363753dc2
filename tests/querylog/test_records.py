"""Query-log records (timestamps, spool lines, the query hash) and the query log's settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.helpers import T0
from tierroute.errors import ConfigError
from tierroute.querylog import FeedbackRecord, hash_query
from tierroute.querylog.doubles import sample_record
from tierroute.querylog.records import item_from_line, item_to_line
from tierroute.settings import Settings


def test_record_refuses_naive_timestamp() -> None:
    """A record without a timezone is refused rather than stored at an ambiguous time."""
    with pytest.raises(ValueError, match="timezone"):
        sample_record("r", ts=datetime(2025, 1, 1))


def test_record_timestamp_is_converted_to_utc() -> None:
    """Aware timestamps in any zone are kept as the same instant in UTC."""
    plus_two = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert sample_record("r", ts=plus_two).ts.tzinfo is UTC


def test_spool_line_round_trips_every_field() -> None:
    """A query and a feedback record come back from their spool line unchanged."""
    query = sample_record("r1", query_text="secret?", escalation_reasons=["JUDGE_FAILED"])
    feedback = FeedbackRecord("r1", ts=T0, rating=None, correct=False, tenant_id="t")
    assert item_from_line(item_to_line(query)) == query
    assert item_from_line(item_to_line(feedback)) == feedback


def test_hash_query_is_sha256_of_utf8() -> None:
    """The query hash is the SHA-256 hex digest of the UTF-8 text."""
    assert hash_query("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_db_url_alias_reaches_querylog_settings() -> None:
    """TIERROUTE_DB_URL sets querylog.url, which prints as a secret."""
    settings = Settings.from_env({"TIERROUTE_DB_URL": "postgresql://u:pw@db/log"})
    assert settings.querylog.url.get() == "postgresql://u:pw@db/log"
    assert "pw" not in repr(settings.querylog)


def test_querylog_config_refuses_empty_queue() -> None:
    """A queue or batch size below 1 is a configuration error."""
    with pytest.raises(ConfigError):
        Settings.from_env({"TIERROUTE_QUERYLOG_QUEUE_SIZE": "0"})
