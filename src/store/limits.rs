//! Rate-limit counters and StartAuth idempotency keys.

use sqlx::FromRow;

use super::{Result, Store, Tx, on_pool, on_tx};
use crate::clock::UnixMillis;

/// One counter to increment: (key, window start).
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub key: &'a str,
    pub window_start: UnixMillis,
}

// One statement increments every counter of a call (at most three).
macro_rules! upsert {
    ($($row:literal),+) => {
        concat!(
            "INSERT INTO rate_counters (tenant_id, key, window_start, count, last_at) VALUES ",
            $($row,)+
            " ON CONFLICT (tenant_id, key, window_start) DO UPDATE \
              SET count = rate_counters.count + 1, last_at = excluded.last_at \
              RETURNING key, count"
        )
    };
}
const UPSERT: [&str; 3] = [
    upsert!("($1, $3, $4, 1, $2)"),
    upsert!("($1, $3, $4, 1, $2), ", "($1, $5, $6, 1, $2)"),
    upsert!(
        "($1, $3, $4, 1, $2), ",
        "($1, $5, $6, 1, $2), ",
        "($1, $7, $8, 1, $2)"
    ),
];

const COUNTER: &str = "SELECT count, last_at FROM rate_counters \
    WHERE tenant_id = $1 AND key = $2 AND window_start = $3";
// PostgreSQL: also lock the row, so racing verifications of one address see
// each other's failures. (A SQLite transaction already holds the write lock.)
const COUNTER_FOR_UPDATE: &str = "SELECT count, last_at FROM rate_counters \
    WHERE tenant_id = $1 AND key = $2 AND window_start = $3 FOR UPDATE";

const PURGE_COUNTERS: &str = "DELETE FROM rate_counters WHERE window_start < $1";
const PURGE_KEYS: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

/// Takes the key for this session unless an unexpired one exists (an
/// expired one is replaced). Returns the session id on success.
const CLAIM_KEY: &str = "INSERT INTO idempotency_keys \
    (tenant_id, key, request_hash, session_id, answer_expires_at, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
      session_id = excluded.session_id, answer_expires_at = excluded.answer_expires_at, \
      created_at = excluded.created_at, expires_at = excluded.expires_at \
    WHERE idempotency_keys.expires_at <= $6 \
    RETURNING session_id";

const EXISTING_KEY: &str = "SELECT request_hash, session_id, answer_expires_at \
    FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";

/// Adds to a counter outside any call's transaction; returns its new total.
const ADD_TO_COUNTER: &str = "INSERT INTO rate_counters (tenant_id, key, window_start, count, last_at) \
    VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (tenant_id, key, window_start) DO UPDATE \
    SET count = rate_counters.count + excluded.count, last_at = excluded.last_at \
    RETURNING count";

/// The first use of an idempotency key: its request and its answer.
#[derive(Debug, FromRow)]
pub struct ExistingKey {
    pub request_hash: Vec<u8>,
    pub session_id: String,
    pub answer_expires_at: UnixMillis,
}

/// A StartAuth answer to keep under an idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct NewIdempotencyKey<'a> {
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub session_id: &'a str,
    pub answer_expires_at: UnixMillis,
    pub now: UnixMillis,
    pub expires_at: UnixMillis,
}

impl Tx {
    /// Increments counters (one statement) and returns each one's new count.
    pub async fn hit(
        &mut self,
        tenant_id: &str,
        hits: &[Hit<'_>],
        now: UnixMillis,
    ) -> Result<Vec<(String, i32)>> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let sql = UPSERT[hits.len().min(3) - 1];
        Ok(on_tx!(self, "hit", |conn| {
            let mut q = sqlx::query_as::<_, (String, i32)>(sql)
                .bind(tenant_id)
                .bind(now);
            for h in hits.iter().take(3) {
                q = q.bind(h.key).bind(h.window_start);
            }
            q.fetch_all(conn).await
        })?)
    }

    /// A counter's count and last hit, if it exists, locked until the end
    /// of the transaction.
    pub async fn lock_counter(
        &mut self,
        tenant_id: &str,
        key: &str,
        window_start: UnixMillis,
    ) -> Result<Option<(i32, UnixMillis)>> {
        let sql = match self.inner {
            super::TxInner::Postgres(_) => COUNTER_FOR_UPDATE,
            super::TxInner::Sqlite(_) => COUNTER,
        };
        Ok(on_tx!(self, "lock_counter", |conn| {
            sqlx::query_as::<_, (i32, UnixMillis)>(sql)
                .bind(tenant_id)
                .bind(key)
                .bind(window_start)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Takes an idempotency key for a new session, unless an unexpired one
    /// exists (then `false`: see [`Tx::existing_idempotency_key`]). An
    /// expired one is replaced.
    pub async fn claim_idempotency_key(
        &mut self,
        tenant_id: &str,
        k: &NewIdempotencyKey<'_>,
    ) -> Result<bool> {
        let claimed = on_tx!(self, "claim_idempotency_key", |conn| {
            sqlx::query_scalar::<_, String>(CLAIM_KEY)
                .bind(tenant_id)
                .bind(k.key)
                .bind(k.request_hash)
                .bind(k.session_id)
                .bind(k.answer_expires_at)
                .bind(k.now)
                .bind(k.expires_at)
                .fetch_optional(conn)
                .await
        })?;
        Ok(claimed.as_deref() == Some(k.session_id))
    }

    pub async fn existing_idempotency_key(
        &mut self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<ExistingKey>> {
        Ok(on_tx!(self, "existing_idempotency_key", |conn| {
            sqlx::query_as::<_, ExistingKey>(EXISTING_KEY)
                .bind(tenant_id)
                .bind(key)
                .fetch_optional(conn)
                .await
        })?)
    }
}

impl Store {
    /// Adds `n` to a counter (its own statement: no call waits on it) and
    /// returns the counter's total.
    pub async fn add_to_counter(
        &self,
        tenant_id: &str,
        key: &str,
        window_start: UnixMillis,
        n: i32,
        now: UnixMillis,
    ) -> Result<i64> {
        let total = on_pool!(self, "add_to_counter", |pool| {
            sqlx::query_scalar::<_, i32>(ADD_TO_COUNTER)
                .bind(tenant_id)
                .bind(key)
                .bind(window_start)
                .bind(n)
                .bind(now)
                .fetch_one(pool)
                .await
        })?;
        Ok(i64::from(total))
    }

    /// Deletes counters of windows that ended before `before` and expired
    /// idempotency keys. Returns how many rows went.
    pub async fn purge_limits(&self, before: UnixMillis, now: UnixMillis) -> Result<u64> {
        let counters = on_pool!(self, "purge_limits", |pool| {
            sqlx::query(PURGE_COUNTERS)
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        let keys = on_pool!(self, "purge_limits", |pool| {
            sqlx::query(PURGE_KEYS)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(counters + keys)
    }
}
