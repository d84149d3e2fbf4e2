-- Passkeys (WebAuthn credentials) and the ceremonies that register and use
-- them. Kept in lockstep with migrations/sqlite.

-- A user's passkeys. `credential` is the relying-party library's record of
-- the credential (public key, signature counter, backup flags) as JSON: no
-- secret, only what verifies the user's signatures. The credential id is
-- unique within a tenant. `counter_regressed_at` marks a passkey whose
-- signature counter went backwards (a possible clone): it is refused from
-- then on.
CREATE TABLE passkeys (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id        BYTEA NOT NULL,
    credential           TEXT NOT NULL,
    name                 TEXT NOT NULL,
    sign_count           BIGINT NOT NULL,
    backup_eligible      BOOLEAN NOT NULL,
    backup_state         BOOLEAN NOT NULL,
    created_at           BIGINT NOT NULL,
    last_used_at         BIGINT,
    counter_regressed_at BIGINT,
    UNIQUE (tenant_id, credential_id)
);
CREATE INDEX passkeys_user ON passkeys (tenant_id, user_id);

-- A registration or login ceremony between its Start and its Finish: the
-- library's ceremony state (the challenge) as JSON. Single use: Finish
-- deletes the row it uses, in its own transaction. kind: 'registration'
-- (user_id: who registers), 'login' (any user's passkey) or
-- 'address_login' (only user_id's passkey; none when the address has no
-- account, so nothing can finish it).
CREATE TABLE passkey_ceremonies (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX passkey_ceremonies_expiry ON passkey_ceremonies (expires_at);
