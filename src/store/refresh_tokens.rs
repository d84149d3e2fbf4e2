//! Refresh tokens: issued at login, rotated once each, found again to tell
//! a retry from a reuse.

use sqlx::FromRow;

use super::{Result, SessionStage, Store, Tx, on_pool, on_tx};
use crate::clock::UnixMillis;

/// An active session, as a refresh sees it.
#[derive(Debug, FromRow)]
pub struct ActiveSession {
    pub user_id: String,
    pub email: String,
    pub expires_at: UnixMillis,
    /// The user's metadata (JSON object text), for the access token.
    pub app_metadata: Option<String>,
}

/// A refresh token that was already rotated, with its session.
#[derive(Debug, FromRow)]
pub struct RotatedRefreshToken {
    pub session_id: String,
    pub rotated_at: Option<UnixMillis>,
    pub successor_sealed: Option<Vec<u8>>,
    #[sqlx(try_from = "String")]
    pub state: SessionStage,
    pub user_id: Option<String>,
    pub email: String,
    pub expires_at: Option<UnixMillis>,
    /// The user's metadata (JSON object text), for the access token.
    pub app_metadata: Option<String>,
    /// Set while the session's user is disabled.
    pub user_disabled_at: Option<UnixMillis>,
}

const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at) \
    VALUES ($1, $2, $3, $4)";

/// Marks a refresh token used, only if it was not already: of two racing
/// refreshes exactly one rotates.
const ROTATE_REFRESH_TOKEN: &str = "UPDATE refresh_tokens SET rotated_at = $3, successor_sealed = $4 \
    WHERE token_hash = $1 AND tenant_id = $2 AND rotated_at IS NULL \
    RETURNING session_id";

const TOUCH_ACTIVE_SESSION: &str = "UPDATE auth_sessions SET last_refreshed_at = $3 \
    WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND expires_at > $3 \
    RETURNING user_id, email, expires_at, \
      (SELECT u.app_metadata FROM users u \
        WHERE u.id = auth_sessions.user_id AND u.tenant_id = auth_sessions.tenant_id) AS app_metadata";

const FIND_REFRESH_TOKEN: &str = "SELECT r.session_id, r.rotated_at, r.successor_sealed, \
      s.state, s.user_id, s.email, s.expires_at, u.app_metadata, u.disabled_at AS user_disabled_at \
    FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id AND s.tenant_id = r.tenant_id \
    LEFT JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
    WHERE r.token_hash = $1 AND r.tenant_id = $2";

const SESSION_OF_REFRESH_TOKEN: &str =
    "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND tenant_id = $2";

impl Tx {
    pub async fn insert_refresh_token(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        token_hash: &[u8],
        now: UnixMillis,
    ) -> Result<()> {
        on_tx!(self, "insert_refresh_token", |conn| {
            sqlx::query(INSERT_REFRESH_TOKEN)
                .bind(token_hash)
                .bind(tenant_id)
                .bind(session_id)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Marks an unused refresh token used, storing its sealed successor.
    /// Returns its session id, or `None` when the token is unknown or was
    /// already used.
    pub async fn rotate_refresh_token(
        &mut self,
        tenant_id: &str,
        token_hash: &[u8],
        successor_sealed: &[u8],
        now: UnixMillis,
    ) -> Result<Option<String>> {
        Ok(on_tx!(self, "rotate_refresh_token", |conn| {
            sqlx::query_scalar::<_, String>(ROTATE_REFRESH_TOKEN)
                .bind(token_hash)
                .bind(tenant_id)
                .bind(now)
                .bind(successor_sealed)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Records a refresh on an active, unexpired session and returns it.
    pub async fn touch_active_session(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        now: UnixMillis,
    ) -> Result<Option<ActiveSession>> {
        Ok(on_tx!(self, "touch_active_session", |conn| {
            sqlx::query_as::<_, ActiveSession>(TOUCH_ACTIVE_SESSION)
                .bind(session_id)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// The session a refresh token belongs to, used or not.
    pub async fn session_of_refresh_token(
        &mut self,
        tenant_id: &str,
        token_hash: &[u8],
    ) -> Result<Option<String>> {
        Ok(on_tx!(self, "session_of_refresh_token", |conn| {
            sqlx::query_scalar::<_, String>(SESSION_OF_REFRESH_TOKEN)
                .bind(token_hash)
                .bind(tenant_id)
                .fetch_optional(conn)
                .await
        })?)
    }
}

impl Store {
    /// A refresh token with its session, for explaining a refused rotation.
    pub async fn find_refresh_token(
        &self,
        tenant_id: &str,
        token_hash: &[u8],
    ) -> Result<Option<RotatedRefreshToken>> {
        Ok(on_pool!(self, "find_refresh_token", |pool| {
            sqlx::query_as::<_, RotatedRefreshToken>(FIND_REFRESH_TOKEN)
                .bind(token_hash)
                .bind(tenant_id)
                .fetch_optional(pool)
                .await
        })?)
    }
}
