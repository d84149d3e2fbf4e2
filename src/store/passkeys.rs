//! Passkeys and their ceremonies. A ceremony is claimed by deleting it, in
//! the transaction of the Finish that uses it: of any number of Finishes of
//! one ceremony, on any replicas, exactly one gets its state.

use sqlx::FromRow;

use super::{Result, Store, Tx, decode_error, on_pool, on_tx};
use crate::clock::UnixMillis;

stored_enum! {
    /// What a ceremony is for (`passkey_ceremonies.kind`).
    pub enum CeremonyKind {
        /// Adding a passkey to `user_id`.
        Registration = "registration",
        /// A login with any user's passkey (discoverable credentials).
        Login = "login",
        /// A login that only `user_id`'s passkey may finish (none: the
        /// address has no account, and nothing can finish it).
        AddressLogin = "address_login",
    }
}

/// A ceremony as Start stores it.
#[derive(Debug)]
pub struct NewCeremony<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub kind: CeremonyKind,
    pub user_id: Option<&'a str>,
    /// The relying-party library's state, as JSON.
    pub state: &'a str,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A ceremony, as its Finish claimed it.
#[derive(Debug)]
pub struct Ceremony {
    pub kind: CeremonyKind,
    pub user_id: Option<String>,
    pub state: String,
    pub expires_at: UnixMillis,
}

#[derive(FromRow)]
struct CeremonyRow {
    kind: String,
    user_id: Option<String>,
    state: String,
    expires_at: UnixMillis,
}

/// A stored passkey.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct PasskeyRow {
    pub id: String,
    pub user_id: String,
    pub credential_id: Vec<u8>,
    /// The relying-party library's credential record, as JSON.
    pub credential: String,
    pub name: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
    pub counter_regressed_at: Option<UnixMillis>,
}

/// A passkey as registration stores it.
#[derive(Debug)]
pub struct NewPasskey<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub credential_id: &'a [u8],
    pub credential: &'a str,
    pub name: &'a str,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: UnixMillis,
}

/// What a successful login changes in a passkey.
#[derive(Debug)]
pub struct PasskeyUse<'a> {
    pub credential: &'a str,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub used_at: UnixMillis,
}

const INSERT_CEREMONY: &str = "INSERT INTO passkey_ceremonies \
    (id, tenant_id, kind, user_id, state, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Claims a ceremony: only one transaction can delete a row.
const TAKE_CEREMONY: &str = "DELETE FROM passkey_ceremonies WHERE id = $1 AND tenant_id = $2 \
    RETURNING kind, user_id, state, expires_at";

const PURGE_CEREMONIES: &str = "DELETE FROM passkey_ceremonies WHERE expires_at <= $1";

const INSERT_PASSKEY: &str = "INSERT INTO passkeys \
    (id, tenant_id, user_id, credential_id, credential, name, sign_count, backup_eligible, \
     backup_state, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (tenant_id, credential_id) DO NOTHING RETURNING id";

const USER_PASSKEYS: &str = "SELECT id, user_id, credential_id, credential, name, sign_count, \
    backup_eligible, backup_state, created_at, last_used_at, counter_regressed_at \
    FROM passkeys WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id";

/// Finds a passkey by credential id and takes its row lock (a no-op update,
/// the same text on both engines): racing logins with one passkey
/// serialise, so each sees the counter the other stored.
const LOCK_PASSKEY: &str = "UPDATE passkeys SET sign_count = sign_count \
    WHERE tenant_id = $1 AND credential_id = $2 \
    RETURNING id, user_id, credential_id, credential, name, sign_count, \
      backup_eligible, backup_state, created_at, last_used_at, counter_regressed_at";

const RECORD_USE: &str = "UPDATE passkeys SET credential = $3, sign_count = $4, \
    backup_eligible = $5, backup_state = $6, last_used_at = $7 \
    WHERE tenant_id = $1 AND id = $2";

const MARK_REGRESSED: &str = "UPDATE passkeys SET counter_regressed_at = $3 \
    WHERE tenant_id = $1 AND id = $2 AND counter_regressed_at IS NULL";

const DELETE_PASSKEY: &str =
    "DELETE FROM passkeys WHERE tenant_id = $1 AND user_id = $2 AND id = $3";

impl Store {
    /// Stores a ceremony between its Start and its Finish.
    pub async fn insert_ceremony(&self, c: &NewCeremony<'_>) -> Result<()> {
        on_pool!(self, "insert_ceremony", |pool| {
            sqlx::query(INSERT_CEREMONY)
                .bind(c.id)
                .bind(c.tenant_id)
                .bind(c.kind.as_str())
                .bind(c.user_id)
                .bind(c.state)
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// A user's passkeys, oldest first.
    pub async fn user_passkeys(&self, tenant_id: &str, user_id: &str) -> Result<Vec<PasskeyRow>> {
        Ok(on_pool!(self, "user_passkeys", |pool| {
            sqlx::query_as::<_, PasskeyRow>(USER_PASSKEYS)
                .bind(tenant_id)
                .bind(user_id)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Deletes one of a user's passkeys. False when the user has no such
    /// passkey.
    pub async fn delete_passkey(&self, tenant_id: &str, user_id: &str, id: &str) -> Result<bool> {
        let deleted = on_pool!(self, "delete_passkey", |pool| {
            sqlx::query(DELETE_PASSKEY)
                .bind(tenant_id)
                .bind(user_id)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(deleted == 1)
    }

    /// Deletes the ceremonies that expired by `now`. Returns how many.
    pub async fn purge_ceremonies(&self, now: UnixMillis) -> Result<u64> {
        Ok(on_pool!(self, "purge_ceremonies", |pool| {
            sqlx::query(PURGE_CEREMONIES)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }
}

impl Tx {
    /// Claims a ceremony of the tenant (deleting it, expired or not): the
    /// caller checks its kind and expiry. `None` when there is none (never
    /// made, another tenant's, or already claimed).
    pub async fn take_ceremony(&mut self, tenant_id: &str, id: &str) -> Result<Option<Ceremony>> {
        let row = on_tx!(self, "take_ceremony", |conn| {
            sqlx::query_as::<_, CeremonyRow>(TAKE_CEREMONY)
                .bind(id)
                .bind(tenant_id)
                .fetch_optional(conn)
                .await
        })?;
        row.map(|r| {
            Ok(Ceremony {
                kind: CeremonyKind::try_from(r.kind).map_err(decode_error)?,
                user_id: r.user_id,
                state: r.state,
                expires_at: r.expires_at,
            })
        })
        .transpose()
    }

    /// Stores a new passkey. False when the tenant has one with this
    /// credential id already.
    pub async fn insert_passkey(&mut self, p: &NewPasskey<'_>) -> Result<bool> {
        let inserted = on_tx!(self, "insert_passkey", |conn| {
            sqlx::query_scalar::<_, String>(INSERT_PASSKEY)
                .bind(p.id)
                .bind(p.tenant_id)
                .bind(p.user_id)
                .bind(p.credential_id)
                .bind(p.credential)
                .bind(p.name)
                .bind(p.sign_count)
                .bind(p.backup_eligible)
                .bind(p.backup_state)
                .bind(p.created_at)
                .fetch_optional(conn)
                .await
        })?;
        Ok(inserted.is_some())
    }

    /// The passkey with this credential id, locked until the end of the
    /// transaction.
    pub async fn lock_passkey(
        &mut self,
        tenant_id: &str,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRow>> {
        Ok(on_tx!(self, "lock_passkey", |conn| {
            sqlx::query_as::<_, PasskeyRow>(LOCK_PASSKEY)
                .bind(tenant_id)
                .bind(credential_id)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Records a successful login with a passkey: its updated record, counter
    /// and backup flags, and when.
    pub async fn record_passkey_use(
        &mut self,
        tenant_id: &str,
        id: &str,
        u: &PasskeyUse<'_>,
    ) -> Result<()> {
        on_tx!(self, "record_passkey_use", |conn| {
            sqlx::query(RECORD_USE)
                .bind(tenant_id)
                .bind(id)
                .bind(u.credential)
                .bind(u.sign_count)
                .bind(u.backup_eligible)
                .bind(u.backup_state)
                .bind(u.used_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Marks a passkey whose signature counter went backwards (kept at the
    /// first time it happened).
    pub async fn mark_counter_regressed(
        &mut self,
        tenant_id: &str,
        id: &str,
        now: UnixMillis,
    ) -> Result<()> {
        on_tx!(self, "mark_counter_regressed", |conn| {
            sqlx::query(MARK_REGRESSED)
                .bind(tenant_id)
                .bind(id)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}
