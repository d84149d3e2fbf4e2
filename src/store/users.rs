//! Users: found or created by a login, looked up and listed, changed
//! (metadata, disabled, enabled) and deleted. Every change is a [`Tx`]
//! method, so the domain makes it in a transaction of its own choosing
//! (with whatever else must happen at the same time).

use sqlx::FromRow;

use super::{Result, SessionEnd, Store, Tx, on_pool, on_tx};
use crate::clock::UnixMillis;

/// A user as stored.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// Set while the user may not log in.
    pub disabled_at: Option<UnixMillis>,
    /// A JSON object (text), `{}` when the app set none.
    pub app_metadata: String,
}

/// Which users a listing returns, in `(created_at, id)` order.
#[derive(Clone, Copy, Debug, Default)]
pub struct UserQuery<'a> {
    /// Addresses starting with this (canonical form).
    pub email_prefix: Option<&'a str>,
    /// Created at or after.
    pub created_from: Option<UnixMillis>,
    /// Created before.
    pub created_before: Option<UnixMillis>,
    /// Only users after this one in the order: `(created_at, id)`.
    pub after: Option<(UnixMillis, &'a str)>,
    pub limit: i64,
}

/// The columns of [`UserRow`], in every query that returns one.
macro_rules! user_columns {
    () => {
        "id, email, created_at, updated_at, disabled_at, app_metadata"
    };
}

const FIND_USER: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE tenant_id = $1 AND email = $2"
);

const USER_BY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE tenant_id = $1 AND id = $2"
);

const INSERT_USER: &str = concat!(
    "INSERT INTO users (id, tenant_id, email, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (tenant_id, email) DO NOTHING RETURNING ",
    user_columns!()
);

/// (An empty prefix, the smallest and largest times and an empty id match
/// everything: one text for every combination of filters.)
const LIST_USERS: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE tenant_id = $1 \
      AND ($2 = '' OR substr(email, 1, length($2)) = $2) \
      AND created_at >= $3 AND created_at < $4 \
      AND (created_at > $5 OR (created_at = $5 AND id > $6)) \
     ORDER BY created_at, id LIMIT $7"
);

/// (Only an enabled user's address changes.)
const SET_EMAIL: &str = concat!(
    "UPDATE users SET email = $3, updated_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL RETURNING ",
    user_columns!()
);

/// A user's sessions that can still be refreshed carry their new address.
const SET_SESSIONS_EMAIL: &str = "UPDATE auth_sessions SET email = $3 \
    WHERE tenant_id = $1 AND user_id = $2 AND state = 'active'";

const USER_EXISTS: &str = "SELECT id FROM users WHERE tenant_id = $1 AND email = $2";

/// Disabling an already disabled user keeps its first time.
const DISABLE_USER: &str = concat!(
    "UPDATE users SET disabled_at = COALESCE(disabled_at, $3), updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    user_columns!()
);

const ENABLE_USER: &str = concat!(
    "UPDATE users SET disabled_at = NULL, updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    user_columns!()
);

const SET_METADATA: &str = concat!(
    "UPDATE users SET app_metadata = $3, updated_at = $4 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    user_columns!()
);

/// Every login of a user that is not over: theirs (active, or pending and
/// already theirs), and every pending login of their address. Proofs are
/// wiped, so a code already sent stops working.
const END_ALL_SESSIONS_OF_USER: &str = "UPDATE auth_sessions \
    SET state = 'ended', end_reason = $4, ended_at = $5, code_hash = NULL, link_hash = NULL \
    WHERE tenant_id = $1 AND (user_id = $2 OR email = $3 OR email_change_of = $2) \
      AND state IN ('pending', 'active')";

/// The emails of a user's pending logins that are not out yet become
/// suppressed: nothing more goes to a disabled user. (Only queued rows: the
/// partial index `outbox_due` holds exactly those.)
const SUPPRESS_QUEUED_MAIL_OF_USER: &str = "UPDATE outbox SET kind = 'suppressed' \
    WHERE tenant_id = $1 AND state = 'queued' AND kind = 'sign_in' AND session_id IN \
      (SELECT id FROM auth_sessions WHERE tenant_id = $1 AND state = 'pending' \
         AND (user_id = $2 OR email = $3 OR email_change_of = $2))";

// A deleted user's sessions are theirs, every login (pending, or ended
// before it made them a user) of their address ($3), and every change of
// address they started.
const DELETE_USER_TOKENS: &str = "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND session_id IN \
    (SELECT id FROM auth_sessions WHERE tenant_id = $1 \
       AND (user_id = $2 OR email = $3 OR email_change_of = $2))";
const DELETE_USER_MAIL: &str = "DELETE FROM outbox WHERE tenant_id = $1 AND (recipient = $3 OR session_id IN \
    (SELECT id FROM auth_sessions WHERE tenant_id = $1 \
       AND (user_id = $2 OR email = $3 OR email_change_of = $2)))";
const DELETE_USER_SESSIONS: &str = "DELETE FROM auth_sessions WHERE tenant_id = $1 \
    AND (user_id = $2 OR email = $3 OR email_change_of = $2)";
const DELETE_USER: &str = "DELETE FROM users WHERE tenant_id = $1 AND id = $2";

impl Tx {
    /// The user with this address, created (with `new_id`) if there is none.
    /// Returns the user and whether this call created it.
    pub async fn find_or_create_user(
        &mut self,
        tenant_id: &str,
        email: &str,
        new_id: &str,
        now: UnixMillis,
    ) -> Result<(UserRow, bool)> {
        if let Some(user) = self.find_user(tenant_id, email).await? {
            return Ok((user, false));
        }
        let inserted = on_tx!(self, "find_or_create_user", |conn| {
            sqlx::query_as::<_, UserRow>(INSERT_USER)
                .bind(new_id)
                .bind(tenant_id)
                .bind(email)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?;
        match inserted {
            Some(user) => Ok((user, true)),
            // Another transaction created it between our read and insert (the
            // insert waited for it to commit): read the winner's row.
            None => {
                let user = self.find_user(tenant_id, email).await?;
                Ok((user.ok_or(sqlx::Error::RowNotFound)?, false))
            }
        }
    }

    /// The user with this address, if any.
    pub async fn find_user(&mut self, tenant_id: &str, email: &str) -> Result<Option<UserRow>> {
        Ok(on_tx!(self, "find_user", |conn| {
            sqlx::query_as::<_, UserRow>(FIND_USER)
                .bind(tenant_id)
                .bind(email)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// A user by id, in this transaction.
    pub async fn user_by_id(&mut self, tenant_id: &str, id: &str) -> Result<Option<UserRow>> {
        Ok(on_tx!(self, "user_by_id", |conn| {
            sqlx::query_as::<_, UserRow>(USER_BY_ID)
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Gives an enabled user a new address, and their active sessions with
    /// it (tokens they refresh carry it). `None`: no such enabled user.
    pub async fn set_user_email(
        &mut self,
        tenant_id: &str,
        id: &str,
        email: &str,
        now: UnixMillis,
    ) -> Result<Option<UserRow>> {
        let row = on_tx!(self, "set_user_email", |conn| {
            sqlx::query_as::<_, UserRow>(SET_EMAIL)
                .bind(tenant_id)
                .bind(id)
                .bind(email)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?;
        if row.is_some() {
            on_tx!(self, "set_user_email", |conn| {
                sqlx::query(SET_SESSIONS_EMAIL)
                    .bind(tenant_id)
                    .bind(id)
                    .bind(email)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        Ok(row)
    }

    /// Whether the tenant has a user with this address.
    pub async fn user_exists(&mut self, tenant_id: &str, email: &str) -> Result<bool> {
        let found = on_tx!(self, "user_exists", |conn| {
            sqlx::query_scalar::<_, String>(USER_EXISTS)
                .bind(tenant_id)
                .bind(email)
                .fetch_optional(conn)
                .await
        })?;
        Ok(found.is_some())
    }

    /// Disables (`disabled` true, keeping the first time if it already
    /// was) or enables a user. `None`: no such user.
    pub async fn set_user_disabled(
        &mut self,
        tenant_id: &str,
        id: &str,
        disabled: bool,
        now: UnixMillis,
    ) -> Result<Option<UserRow>> {
        let sql = if disabled { DISABLE_USER } else { ENABLE_USER };
        Ok(on_tx!(self, "set_user_disabled", |conn| {
            sqlx::query_as::<_, UserRow>(sql)
                .bind(tenant_id)
                .bind(id)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Replaces a user's metadata (JSON object text). `None`: no such user.
    pub async fn set_user_metadata(
        &mut self,
        tenant_id: &str,
        id: &str,
        app_metadata: &str,
        now: UnixMillis,
    ) -> Result<Option<UserRow>> {
        Ok(on_tx!(self, "set_user_metadata", |conn| {
            sqlx::query_as::<_, UserRow>(SET_METADATA)
                .bind(tenant_id)
                .bind(id)
                .bind(app_metadata)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Ends every login of a user that is not over yet: their active
    /// sessions and every pending login of their address (its proofs stop
    /// working, and its email, if not out yet, is never sent). Returns how
    /// many ended.
    pub async fn end_every_login_of_user(
        &mut self,
        tenant_id: &str,
        user: &UserRow,
        reason: SessionEnd,
        now: UnixMillis,
    ) -> Result<u64> {
        on_tx!(self, "end_every_login_of_user", |conn| {
            sqlx::query(SUPPRESS_QUEUED_MAIL_OF_USER)
                .bind(tenant_id)
                .bind(&user.id)
                .bind(&user.email)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(on_tx!(self, "end_every_login_of_user", |conn| {
            sqlx::query(END_ALL_SESSIONS_OF_USER)
                .bind(tenant_id)
                .bind(&user.id)
                .bind(&user.email)
                .bind(reason.as_str())
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?)
    }

    /// Deletes a user and everything that holds their address: their
    /// sessions and refresh tokens, every other login of the address
    /// (pending or ended) and every email to it, sent or not. False when
    /// there is no such user.
    pub async fn delete_user(&mut self, tenant_id: &str, id: &str) -> Result<bool> {
        let email = on_tx!(self, "delete_user", |conn| {
            sqlx::query_as::<_, UserRow>(USER_BY_ID)
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(conn)
                .await
        })?
        .map(|u| u.email);
        let Some(email) = email else {
            return Ok(false);
        };
        for sql in [DELETE_USER_TOKENS, DELETE_USER_MAIL, DELETE_USER_SESSIONS] {
            on_tx!(self, "delete_user", |conn| {
                sqlx::query(sql)
                    .bind(tenant_id)
                    .bind(id)
                    .bind(&email)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        on_tx!(self, "delete_user", |conn| {
            sqlx::query(DELETE_USER)
                .bind(tenant_id)
                .bind(id)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(true)
    }
}

impl Store {
    pub async fn user_by_id(&self, tenant_id: &str, id: &str) -> Result<Option<UserRow>> {
        Ok(on_pool!(self, "user_by_id", |pool| {
            sqlx::query_as::<_, UserRow>(USER_BY_ID)
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<UserRow>> {
        Ok(on_pool!(self, "user_by_email", |pool| {
            sqlx::query_as::<_, UserRow>(FIND_USER)
                .bind(tenant_id)
                .bind(email)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// A tenant's users matching `query`, in `(created_at, id)` order.
    pub async fn list_users(&self, tenant_id: &str, query: &UserQuery<'_>) -> Result<Vec<UserRow>> {
        let (after_time, after_id) = query.after.unwrap_or((UnixMillis::MIN, ""));
        Ok(on_pool!(self, "list_users", |pool| {
            sqlx::query_as::<_, UserRow>(LIST_USERS)
                .bind(tenant_id)
                .bind(query.email_prefix.unwrap_or(""))
                .bind(query.created_from.unwrap_or(UnixMillis::MIN))
                .bind(query.created_before.unwrap_or(UnixMillis::MAX))
                .bind(after_time)
                .bind(after_id)
                .bind(query.limit)
                .fetch_all(pool)
                .await
        })?)
    }
}
