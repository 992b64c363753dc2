-- The query log and user feedback (SQLite). Timestamps are fixed-width ISO-8601 UTC text,
-- so they sort and compare as time; JSON columns are text.
CREATE TABLE query_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL DEFAULT '',
    query_sha256 TEXT NOT NULL,
    query_text TEXT,
    query_chars INTEGER NOT NULL DEFAULT 0,
    strategy TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL DEFAULT '',
    scores TEXT NOT NULL DEFAULT '[]',
    chosen_tier TEXT NOT NULL DEFAULT '',
    final_tier TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    decision_time_us INTEGER NOT NULL DEFAULT 0,
    estimated_cost_usd REAL,
    hops TEXT NOT NULL DEFAULT '[]',
    total_cost_usd REAL,
    total_latency_ms REAL,
    escalated INTEGER NOT NULL DEFAULT 0,
    escalation_reasons TEXT NOT NULL DEFAULT '[]',
    judge_status TEXT NOT NULL DEFAULT '',
    degraded INTEGER NOT NULL DEFAULT 0,
    query_type TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX query_log_ts ON query_log (ts);

-- Audits read "recent calls answered by tier X"; drift reads "tier mix since T".
CREATE INDEX query_log_final_tier_ts ON query_log (final_tier, ts);

CREATE TABLE feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    feedback_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    rating INTEGER,
    correct INTEGER,
    tenant_id TEXT NOT NULL DEFAULT ''
);

CREATE INDEX feedback_request_id ON feedback (request_id);

CREATE INDEX feedback_ts ON feedback (ts);
