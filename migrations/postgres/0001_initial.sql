-- latchkey schema v1 (PostgreSQL). Kept in lockstep with migrations/sqlite.
-- Ids are text (UUIDv7), times are integer Unix milliseconds supplied by the
-- service's clock, secrets are stored only as hashes or sealed under the KEK.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The single tenant of a single-app deployment.
INSERT INTO tenants (id, name, created_at) VALUES ('default', 'Default', 0);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    email      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, email)
);

-- One login session from StartAuth to logout.
-- state: 'pending' (proof sent) -> 'active' (verified) -> 'ended'.
CREATE TABLE auth_sessions (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    email             TEXT NOT NULL,
    method            TEXT NOT NULL,
    state             TEXT NOT NULL,
    end_reason        TEXT,
    user_id           TEXT REFERENCES users (id),
    code_hash         BYTEA,
    link_hash         BYTEA,
    attempts          INTEGER NOT NULL DEFAULT 0,
    proof_expires_at  BIGINT NOT NULL,
    expires_at        BIGINT,
    client_ip         TEXT,
    user_agent        TEXT,
    created_at        BIGINT NOT NULL,
    verified_at       BIGINT,
    last_refreshed_at BIGINT,
    ended_at          BIGINT
);
CREATE UNIQUE INDEX auth_sessions_link_hash ON auth_sessions (link_hash) WHERE link_hash IS NOT NULL;
CREATE INDEX auth_sessions_user ON auth_sessions (tenant_id, user_id);

-- Refresh tokens by SHA-256. A rotated token keeps its row (rotated_at set) for
-- reuse detection, with its successor sealed under a key derived from the
-- rotated token itself (only its holder can open it, for the grace window).
CREATE TABLE refresh_tokens (
    token_hash       BYTEA PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    session_id       TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at       BIGINT NOT NULL,
    rotated_at       BIGINT,
    successor_sealed BYTEA
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Token signing keys. A key is published from creation, signs from
-- activates_at, and stays published until published_until (NULL: while it is
-- the newest key).
CREATE TABLE signing_keys (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    generation         INTEGER NOT NULL,
    kid                TEXT NOT NULL UNIQUE,
    alg                TEXT NOT NULL,
    private_key_sealed BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    activates_at       BIGINT NOT NULL,
    published_until    BIGINT,
    PRIMARY KEY (tenant_id, generation)
);

-- Transactional outbox: written in the same transaction as the session,
-- delivered by a background worker. A claim moves next_attempt_at forward by
-- a lease, so a crashed worker's message becomes due again.
-- state: 'queued' -> 'sent' | 'dead'.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    session_id      TEXT,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    payload_sealed  BYTEA,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'queued';
