-- Tenancy: what tenants spend (each model call reserved at its worst case, then settled
-- with its real usage), the requests they make (rate limits), their sessions' floors and
-- the results of their request ids (idempotency). Times are Unix seconds (DOUBLE PRECISION).
CREATE TABLE IF NOT EXISTS tenant_spend (
    reservation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    reserved_usd DOUBLE PRECISION NOT NULL,
    spent_usd DOUBLE PRECISION,
    tokens BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS tenant_spend_window ON tenant_spend (tenant_id, ts);

CREATE TABLE IF NOT EXISTS tenant_requests (
    tenant_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
);

CREATE INDEX IF NOT EXISTS tenant_requests_window ON tenant_requests (tenant_id, ts);

CREATE TABLE IF NOT EXISTS tenant_sessions (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    floor_tier INTEGER NOT NULL,
    loop_tier INTEGER,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

CREATE TABLE IF NOT EXISTS tenant_request_ids (
    tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    result BYTEA,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
