-- Tenants get settings; callers authenticate with API keys. Kept in lockstep
-- with migrations/sqlite.

-- Per-tenant overrides of the server defaults, as JSON (see TenantSettings).
ALTER TABLE tenants ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- API keys: `lk_<scope>_<prefix>_<secret>`. The prefix is public (lookup);
-- only SHA-256 of the whole key is stored. scope: 'app' (AuthService of its
-- tenant) or 'admin' (AdminService).
CREATE TABLE api_keys (
    prefix       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Bumped in the same transaction as every change to keys or tenants, so each
-- replica reloads its in-memory copies only when something changed.
CREATE TABLE change_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO change_counters (name, value) VALUES ('api_keys', 0), ('tenants', 0);
