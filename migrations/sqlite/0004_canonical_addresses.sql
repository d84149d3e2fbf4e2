-- One mailbox, one identity: addresses are stored in one canonical form
-- (see src/auth/email.rs). Kept in lockstep with the other backend's copy.
--
-- The canonical form needs IDNA and RFC 5322 unquoting, which SQL lacks, so
-- the service rewrites the rows written before right after this migration,
-- in one transaction, and then deletes this marker (Store::migrate). Users
-- whose addresses become one: the oldest keeps the address; the others keep
-- their rows (and sessions) with the email "<old> (superseded by <id>)",
-- reachable only by id.
CREATE TABLE data_migrations (
    name TEXT PRIMARY KEY
);
INSERT INTO data_migrations (name) VALUES ('canonical_addresses');
