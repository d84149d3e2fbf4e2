//! Tenants, API keys, and the change counters that tell replicas to reload
//! them.

use sqlx::FromRow;

use super::{Result, Store, on_pool, on_tx};
use crate::clock::UnixMillis;

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    /// JSON of the tenant's settings.
    pub settings: String,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub prefix: String,
    pub tenant_id: String,
    pub name: String,
    pub scope: String,
    pub secret_hash: Vec<u8>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
}

const ALL_TENANTS: &str =
    "SELECT id, name, settings, created_at, updated_at FROM tenants ORDER BY id";
const INSERT_TENANT: &str = "INSERT INTO tenants (id, name, settings, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING";
const UPDATE_TENANT: &str =
    "UPDATE tenants SET name = $2, settings = $3, updated_at = $4 WHERE id = $1";
/// Takes the tenant's row lock (a no-op update) and returns the row.
const LOCK_TENANT: &str = "UPDATE tenants SET updated_at = updated_at WHERE id = $1 \
    RETURNING id, name, settings, created_at, updated_at";
const TENANT: &str = "SELECT id, name, settings, created_at, updated_at FROM tenants WHERE id = $1";

const ALL_KEYS: &str = "SELECT prefix, tenant_id, name, scope, secret_hash, created_at, expires_at, revoked_at, last_used_at \
    FROM api_keys ORDER BY created_at, prefix";
const INSERT_KEY: &str = "INSERT INTO api_keys (prefix, tenant_id, name, scope, secret_hash, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE prefix = $1 AND revoked_at IS NULL";
const KEY_EXISTS: &str = "SELECT COUNT(*) FROM api_keys WHERE prefix = $1";
const RECORD_USED: &str = "UPDATE api_keys SET last_used_at = $2 \
    WHERE prefix = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
const COUNT_KEYS: &str = "SELECT COUNT(*) FROM api_keys";

const BUMP: &str = "UPDATE change_counters SET value = value + 1 WHERE name = $1";
const COUNTERS: &str = "SELECT name, value FROM change_counters ORDER BY name";

/// Which in-memory copy a change invalidates.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    ApiKeys,
    Tenants,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Self::ApiKeys => "api_keys",
            Self::Tenants => "tenants",
        }
    }
}

impl Store {
    pub async fn all_tenants(&self) -> Result<Vec<TenantRow>> {
        Ok(on_pool!(self, "all_tenants", |pool| {
            sqlx::query_as::<_, TenantRow>(ALL_TENANTS)
                .fetch_all(pool)
                .await
        })?)
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        Ok(on_pool!(self, "tenant", |pool| {
            sqlx::query_as::<_, TenantRow>(TENANT)
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Creates a tenant; false when the id is taken.
    pub async fn insert_tenant(
        &self,
        id: &str,
        name: &str,
        settings: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        self.write_tenant(INSERT_TENANT, id, name, settings, now)
            .await
    }

    /// Changes a tenant in one transaction holding its row lock: `change`
    /// gets the current row and returns the new name and settings (JSON), or
    /// an error that rolls everything back. Concurrent changes of different
    /// settings therefore both take effect. `Ok(None)`: no such tenant.
    pub async fn modify_tenant<E: From<super::StoreError>>(
        &self,
        id: &str,
        now: UnixMillis,
        change: impl FnOnce(&TenantRow) -> std::result::Result<(String, String), E>,
    ) -> std::result::Result<Option<TenantRow>, E> {
        let mut tx = self.begin().await?;
        let current = on_tx!(tx, "modify_tenant", |conn| {
            sqlx::query_as::<_, TenantRow>(LOCK_TENANT)
                .bind(id)
                .fetch_optional(conn)
                .await
        })
        .map_err(super::StoreError::from)?;
        let Some(current) = current else {
            return Ok(None);
        };
        let (name, settings) = change(&current)?;
        let now = now.max(current.updated_at + 1);
        on_tx!(tx, "modify_tenant", |conn| {
            sqlx::query(UPDATE_TENANT)
                .bind(id)
                .bind(&name)
                .bind(&settings)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(super::StoreError::from)?;
        tx.bump(Counter::Tenants).await?;
        tx.commit().await?;
        Ok(Some(TenantRow {
            name,
            settings,
            updated_at: now,
            ..current
        }))
    }

    /// Runs `sql` (binding id, name, settings, now) and, when it changed a
    /// row, bumps the tenants counter in the same transaction.
    async fn write_tenant(
        &self,
        sql: &'static str,
        id: &str,
        name: &str,
        settings: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let written = on_tx!(tx, "write_tenant", |conn| {
            sqlx::query(sql)
                .bind(id)
                .bind(name)
                .bind(settings)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if written == 0 {
            return Ok(false);
        }
        tx.bump(Counter::Tenants).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn all_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        Ok(on_pool!(self, "all_api_keys", |pool| {
            sqlx::query_as::<_, ApiKeyRow>(ALL_KEYS)
                .fetch_all(pool)
                .await
        })?)
    }

    pub async fn count_api_keys(&self) -> Result<i64> {
        Ok(on_pool!(self, "count_api_keys", |pool| {
            sqlx::query_scalar::<_, i64>(COUNT_KEYS)
                .fetch_one(pool)
                .await
        })?)
    }

    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<()> {
        let mut tx = self.begin().await?;
        on_tx!(tx, "insert_api_key", |conn| {
            sqlx::query(INSERT_KEY)
                .bind(&key.prefix)
                .bind(&key.tenant_id)
                .bind(&key.name)
                .bind(&key.scope)
                .bind(&key.secret_hash)
                .bind(key.created_at)
                .bind(key.expires_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        tx.bump(Counter::ApiKeys).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a key. `None` when no such key exists; `Some(false)` when it
    /// was revoked already.
    pub async fn revoke_api_key(&self, prefix: &str, now: UnixMillis) -> Result<Option<bool>> {
        let mut tx = self.begin().await?;
        let revoked = on_tx!(tx, "revoke_api_key", |conn| {
            sqlx::query(REVOKE_KEY)
                .bind(prefix)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        if revoked == 0 {
            let exists = on_tx!(tx, "revoke_api_key", |conn| {
                sqlx::query_scalar::<_, i64>(KEY_EXISTS)
                    .bind(prefix)
                    .fetch_one(conn)
                    .await
            })?;
            return Ok((exists > 0).then_some(false));
        }
        tx.bump(Counter::ApiKeys).await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// Records when keys were last used (a batch, not a write per call).
    pub async fn record_api_keys_used(&self, batch: &[(String, UnixMillis)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (prefix, at) in batch {
            on_tx!(tx, "record_api_keys_used", |conn| {
                sqlx::query(RECORD_USED)
                    .bind(prefix)
                    .bind(*at)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every change counter, by name.
    pub async fn change_counters(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_pool!(self, "change_counters", |pool| {
            sqlx::query_as::<_, (String, i64)>(COUNTERS)
                .fetch_all(pool)
                .await
        })?)
    }
}

impl super::Tx {
    async fn bump(&mut self, counter: Counter) -> Result<()> {
        on_tx!(self, "bump", |conn| {
            sqlx::query(BUMP)
                .bind(counter.name())
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}
