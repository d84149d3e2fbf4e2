//! The data half of migration 0004: addresses stored before they had one
//! canonical form are rewritten once, right after the schema migrations
//! (the canonical form needs IDNA, which SQL lacks). See
//! `migrations/*/0004_canonical_addresses.sql` and "One mailbox, one
//! identity" in docs/guarantees.md.

use std::collections::HashMap;

use super::{Result, Store, on_tx};

/// The marker row migration 0004 writes.
const MARKER: &str = "canonical_addresses";

/// What the rewrite changed (counts only: addresses are never logged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressRewrite {
    /// Users whose address became canonical.
    pub users: u64,
    /// Younger users whose address became another user's: their email is
    /// now `<old> (superseded by <id>)`, reachable only by id.
    pub superseded: u64,
    pub sessions: u64,
    pub outbox: u64,
}

impl Store {
    /// Rewrites every stored address to `canonical(address)` (when that is
    /// `Some`), if migration 0004's marker says it is due; one transaction,
    /// which deletes the marker first, so replicas starting together (and a
    /// restart after a crash) rewrite exactly once.
    pub(super) async fn rewrite_addresses(
        &self,
        canonical: fn(&str) -> Option<String>,
    ) -> Result<Option<AddressRewrite>> {
        let mut tx = self.begin().await?;
        let due = on_tx!(tx, "rewrite_addresses", |conn| {
            sqlx::query("DELETE FROM data_migrations WHERE name = $1")
                .bind(MARKER)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if due == 0 {
            return Ok(None);
        }
        let mut done = AddressRewrite::default();

        // Users, oldest first per tenant: the oldest of those who share a
        // canonical address keeps it.
        let users: Vec<(String, String, String)> = on_tx!(tx, "rewrite_addresses", |conn| {
            sqlx::query_as(
                "SELECT id, tenant_id, email FROM users ORDER BY tenant_id, created_at, id",
            )
            .fetch_all(conn)
            .await
        })?;
        let mut owners: HashMap<(String, String), String> = HashMap::new();
        let mut renames = Vec::new();
        let mut superseded = Vec::new();
        for (id, tenant_id, email) in users {
            let Some(canonical) = canonical(&email) else {
                // No longer a valid address: left as it is, reachable by id.
                continue;
            };
            match owners.get(&(tenant_id.clone(), canonical.clone())) {
                Some(owner) => superseded.push((format!("{email} (superseded by {owner})"), id)),
                None => {
                    owners.insert((tenant_id, canonical.clone()), id.clone());
                    if canonical != email {
                        renames.push((canonical, id));
                    }
                }
            }
        }
        // The superseded first: one of them may hold the canonical spelling.
        for (email, id) in superseded.iter().chain(&renames) {
            on_tx!(tx, "rewrite_addresses", |conn| {
                sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
                    .bind(email)
                    .bind(id)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        done.users = renames.len() as u64;
        done.superseded = superseded.len() as u64;

        // Sessions and mail: the same address, wherever it is.
        let columns: [(&str, &str, &str); 2] = [
            (
                "auth_sessions",
                "SELECT DISTINCT email FROM auth_sessions",
                "UPDATE auth_sessions SET email = $1 WHERE email = $2",
            ),
            (
                "outbox",
                "SELECT DISTINCT recipient FROM outbox",
                "UPDATE outbox SET recipient = $1 WHERE recipient = $2",
            ),
        ];
        for (table, select, update) in columns {
            let stored: Vec<String> = on_tx!(tx, "rewrite_addresses", |conn| {
                sqlx::query_scalar(select).fetch_all(conn).await
            })?;
            let mut rewritten = 0;
            for old in stored {
                if let Some(new) = canonical(&old).filter(|new| *new != old) {
                    rewritten += on_tx!(tx, "rewrite_addresses", |conn| {
                        sqlx::query(update)
                            .bind(&new)
                            .bind(&old)
                            .execute(conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                }
            }
            match table {
                "outbox" => done.outbox = rewritten,
                _ => done.sessions = rewritten,
            }
        }
        tx.commit().await?;
        Ok(Some(done))
    }
}
