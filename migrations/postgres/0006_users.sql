-- Users get a life of their own: they can be disabled, carry data the app
-- sets (copied into their access tokens), and are listed in a stable order.
-- Kept in lockstep with migrations/sqlite.

-- Set while the user may not log in (NULL: enabled).
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
-- A JSON object the app sets (at most 2 KB), copied into access tokens.
ALTER TABLE users ADD COLUMN app_metadata TEXT NOT NULL DEFAULT '{}';
-- When the user last changed (metadata, disabled, enabled).
ALTER TABLE users ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE users SET updated_at = created_at;

-- A change of address: the user whose address this login proves the new
-- one of (NULL: an ordinary login).
ALTER TABLE auth_sessions ADD COLUMN email_change_of TEXT;

-- ListUsers pages through a tenant's users in this order.
CREATE INDEX users_listing ON users (tenant_id, created_at, id);
