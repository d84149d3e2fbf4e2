//! Token signing keys (private parts sealed under the KEK).

use sqlx::FromRow;

use super::{Result, Store, on_pool};
use crate::clock::UnixMillis;

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub generation: i32,
    pub kid: String,
    pub alg: String,
    pub private_key_sealed: Vec<u8>,
    pub created_at: UnixMillis,
    pub activates_at: UnixMillis,
    pub published_until: Option<UnixMillis>,
}

#[derive(Debug)]
pub struct NewSigningKey<'a> {
    pub tenant_id: &'a str,
    pub generation: i32,
    pub kid: &'a str,
    pub alg: &'a str,
    pub private_key_sealed: &'a [u8],
    pub created_at: UnixMillis,
    pub activates_at: UnixMillis,
}

const PUBLISHED_KEYS: &str = "SELECT generation, kid, alg, private_key_sealed, created_at, activates_at, published_until \
    FROM signing_keys WHERE tenant_id = $1 AND (published_until IS NULL OR published_until > $2) \
    ORDER BY generation";

const ALL_KEYS: &str = "SELECT generation, kid, alg, private_key_sealed, created_at, activates_at, published_until \
    FROM signing_keys WHERE tenant_id = $1 ORDER BY generation";

const INSERT_KEY: &str = "INSERT INTO signing_keys \
    (tenant_id, generation, kid, alg, private_key_sealed, created_at, activates_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, generation) DO NOTHING";

const RETIRE_OLDER_KEYS: &str = "UPDATE signing_keys SET published_until = $3 \
    WHERE tenant_id = $1 AND generation < $2 AND published_until IS NULL";

impl Store {
    /// Keys still published at `now`, oldest first.
    pub async fn published_signing_keys(
        &self,
        tenant_id: &str,
        now: UnixMillis,
    ) -> Result<Vec<SigningKeyRow>> {
        Ok(on_pool!(self, "published_signing_keys", |pool| {
            sqlx::query_as::<_, SigningKeyRow>(PUBLISHED_KEYS)
                .bind(tenant_id)
                .bind(now)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Every key ever made for the tenant, oldest first.
    pub async fn all_signing_keys(&self, tenant_id: &str) -> Result<Vec<SigningKeyRow>> {
        Ok(on_pool!(self, "all_signing_keys", |pool| {
            sqlx::query_as::<_, SigningKeyRow>(ALL_KEYS)
                .bind(tenant_id)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Adds a key as generation `generation`, and schedules every older key
    /// still published without an end to disappear at `retire_older_at`, in
    /// one transaction. False (and nothing written) when that generation
    /// already exists: another process won the race.
    pub async fn insert_signing_key(
        &self,
        key: &NewSigningKey<'_>,
        retire_older_at: UnixMillis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let inserted = super::on_tx!(tx, "insert_signing_key", |conn| {
            sqlx::query(INSERT_KEY)
                .bind(key.tenant_id)
                .bind(key.generation)
                .bind(key.kid)
                .bind(key.alg)
                .bind(key.private_key_sealed)
                .bind(key.created_at)
                .bind(key.activates_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Ok(false);
        }
        super::on_tx!(tx, "insert_signing_key", |conn| {
            sqlx::query(RETIRE_OLDER_KEYS)
                .bind(key.tenant_id)
                .bind(key.generation)
                .bind(retire_older_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(true)
    }
}
