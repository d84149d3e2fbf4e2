-- Rate limits, verification budgets, idempotent starts and resends. Kept in
-- lockstep with migrations/sqlite.

-- Fixed-window counters shared by every replica: sends per address, starts
-- per client IP, wrong codes per address (each updated in the call's own
-- transaction), and per-tenant totals (added to about once a second by each
-- replica).
-- `key` never holds an email address in clear (a keyed hash of it).
CREATE TABLE rate_counters (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        INTEGER NOT NULL,
    last_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key, window_start)
);
CREATE INDEX rate_counters_window ON rate_counters (window_start);

-- StartAuth idempotency keys: the first request's fingerprint and answer.
CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    session_id   TEXT NOT NULL,
    -- The first answer's expiry, returned as it was to every replay.
    answer_expires_at BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- What a resend needs to write the same email again.
ALTER TABLE auth_sessions ADD COLUMN validation_url TEXT;
ALTER TABLE auth_sessions ADD COLUMN locale TEXT;
ALTER TABLE auth_sessions ADD COLUMN mail_kind TEXT;
