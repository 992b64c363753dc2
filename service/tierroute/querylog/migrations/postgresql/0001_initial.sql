-- The query log and user feedback (PostgreSQL), created in the connection's current schema.
CREATE TABLE query_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    ts TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL DEFAULT '',
    query_sha256 TEXT NOT NULL,
    query_text TEXT,
    query_chars INTEGER NOT NULL DEFAULT 0,
    strategy TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL DEFAULT '',
    scores JSONB NOT NULL DEFAULT '[]',
    chosen_tier TEXT NOT NULL DEFAULT '',
    final_tier TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    decision_time_us BIGINT NOT NULL DEFAULT 0,
    estimated_cost_usd DOUBLE PRECISION,
    hops JSONB NOT NULL DEFAULT '[]',
    total_cost_usd DOUBLE PRECISION,
    total_latency_ms DOUBLE PRECISION,
    escalated BOOLEAN NOT NULL DEFAULT FALSE,
    escalation_reasons JSONB NOT NULL DEFAULT '[]',
    judge_status TEXT NOT NULL DEFAULT '',
    degraded BOOLEAN NOT NULL DEFAULT FALSE,
    query_type TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    metadata JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX query_log_ts ON query_log (ts);

-- Audits read "recent calls answered by tier X"; drift reads "tier mix since T".
CREATE INDEX query_log_final_tier_ts ON query_log (final_tier, ts);

CREATE TABLE feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feedback_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    rating INTEGER,
    correct BOOLEAN,
    tenant_id TEXT NOT NULL DEFAULT ''
);

CREATE INDEX feedback_request_id ON feedback (request_id);

CREATE INDEX feedback_ts ON feedback (ts);
