//! Login sessions, users and refresh tokens.

use sqlx::FromRow;

use super::{MailKind, Result, Store, Tx, UserRow, decode_error, on_pool, on_tx};
use crate::clock::UnixMillis;

/// A login session as StartAuth creates it.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub email: &'a str,
    pub method: Method,
    pub code_hash: Option<&'a [u8]>,
    pub link_hash: Option<&'a [u8]>,
    pub proof_expires_at: UnixMillis,
    pub client_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub created_at: UnixMillis,
    /// What a resend needs: where links point, the email's language, and
    /// which email the session gets (sign-in, notice, nothing).
    pub validation_url: Option<&'a str>,
    pub locale: &'a str,
    pub mail_kind: MailKind,
    /// A change of address: the user whose new address this login proves.
    pub email_change_of: Option<&'a str>,
}

/// What a counted verification attempt sees.
#[derive(Debug, FromRow)]
pub struct CodeAttempt {
    pub email: String,
    pub code_hash: Vec<u8>,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// A change of address: the user whose new address this is.
    pub email_change_of: Option<String>,
}

/// A pending session, as a resend sees it.
#[derive(Debug)]
pub struct PendingSession {
    pub email: String,
    pub method: Method,
    pub validation_url: Option<String>,
    pub locale: Option<String>,
    /// (None for a login from before resends existed.)
    pub mail_kind: Option<MailKind>,
    pub created_at: UnixMillis,
}

#[derive(FromRow)]
struct PendingRow {
    email: String,
    #[sqlx(try_from = "String")]
    method: Method,
    validation_url: Option<String>,
    locale: Option<String>,
    mail_kind: Option<String>,
    created_at: UnixMillis,
}

/// A user's login session, as listed.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub state: SessionStage,
    pub end_reason: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: UnixMillis,
    pub verified_at: Option<UnixMillis>,
    pub last_refreshed_at: Option<UnixMillis>,
    pub expires_at: Option<UnixMillis>,
    pub ended_at: Option<UnixMillis>,
}

/// The session a magic link belongs to.
#[derive(Debug, FromRow)]
pub struct LinkedSession {
    pub session_id: String,
    pub email: String,
    /// A change of address: the user whose new address this is.
    pub email_change_of: Option<String>,
}

/// The state of a session, for explaining a refused attempt.
#[derive(Debug)]
pub struct SessionStatus {
    pub state: SessionStage,
    pub end_reason: Option<SessionEnd>,
    pub proof_expires_at: UnixMillis,
}

#[derive(FromRow)]
struct StatusRow {
    #[sqlx(try_from = "String")]
    state: SessionStage,
    end_reason: Option<String>,
    proof_expires_at: UnixMillis,
}

stored_enum! {
    /// Why a session ended (stored in `end_reason`).
    pub enum SessionEnd {
        Revoked = "revoked",
        TooManyAttempts = "too_many_attempts",
        RefreshTokenReused = "refresh_token_reused",
        /// The user was disabled.
        UserDisabled = "user_disabled",
    }
}

stored_enum! {
    /// Where a session is in its life (`state`).
    pub enum SessionStage {
        /// Started; its proof not yet verified.
        Pending = "pending",
        Active = "active",
        Ended = "ended",
    }
}

stored_enum! {
    /// How the user proves they own the address (`method`).
    pub enum Method {
        Code = "code",
        Link = "link",
        CodeAndLink = "code_and_link",
        /// A passkey login's session (never a StartAuth method: it is
        /// active from the start).
        Passkey = "passkey",
    }
}

/// A disabled user's address gets a session like any other, but its email
/// is suppressed (decided here, in the same statement: no extra round trip).
const INSERT_SESSION: &str = "INSERT INTO auth_sessions \
    (id, tenant_id, email, method, state, code_hash, link_hash, proof_expires_at, client_ip, user_agent, created_at, \
     validation_url, locale, mail_kind, email_change_of) \
    SELECT $1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, \
      CASE WHEN EXISTS (SELECT 1 FROM users \
          WHERE tenant_id = $2 AND email = $3 AND disabled_at IS NOT NULL) \
        THEN 'suppressed' ELSE $13 END, $14 \
    RETURNING mail_kind";

/// A session that starts active: a passkey login (no emailed proof).
const INSERT_ACTIVE_SESSION: &str = "INSERT INTO auth_sessions \
    (id, tenant_id, email, method, state, user_id, proof_expires_at, client_ip, user_agent, \
     created_at, verified_at, expires_at) \
    VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $6, $6, $9)";

/// Locks a pending session for a resend and returns what the email needs.
const LOCK_PENDING: &str = "UPDATE auth_sessions SET attempts = attempts \
    WHERE id = $1 AND tenant_id = $2 AND state = 'pending' \
    RETURNING email, method, validation_url, locale, mail_kind, created_at";

/// New proofs for a resend; the session's attempt count stays.
const REPLACE_PROOFS: &str = "UPDATE auth_sessions \
    SET code_hash = $3, link_hash = $4, proof_expires_at = $5 \
    WHERE id = $1 AND tenant_id = $2 AND state = 'pending'";

const USER_SESSIONS: &str = "SELECT id, state, end_reason, client_ip, user_agent, created_at, \
      verified_at, last_refreshed_at, expires_at, ended_at \
    FROM auth_sessions WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC LIMIT $3";

const END_USER_SESSIONS: &str = "UPDATE auth_sessions \
    SET state = 'ended', end_reason = $4, ended_at = $5 \
    WHERE tenant_id = $1 AND user_id = $2 AND id <> $3 AND state = 'active' AND expires_at > $5";

const SESSION_STATE: &str =
    "SELECT state, expires_at FROM auth_sessions WHERE id = $1 AND tenant_id = $2";

/// Counts one attempt, atomically with every check that makes it allowed:
/// concurrent attempts serialise on the row, so the limit is exact.
const TAKE_CODE_ATTEMPT: &str = "UPDATE auth_sessions SET attempts = attempts + 1 \
    WHERE id = $1 AND tenant_id = $2 AND state = 'pending' AND code_hash IS NOT NULL \
      AND proof_expires_at > $3 AND attempts < $4 \
    RETURNING email, code_hash, attempts, email_change_of";

/// Takes the row lock of the pending, unexpired session a link token belongs
/// to (activation follows in the same transaction).
const TAKE_LINK: &str = "UPDATE auth_sessions SET attempts = attempts \
    WHERE link_hash = $1 AND tenant_id = $2 AND state = 'pending' AND proof_expires_at > $3 \
    RETURNING id AS session_id, email, email_change_of";

/// Moves the proof's expiry later (never earlier) once its email went out.
const EXTEND_PROOF: &str = "UPDATE auth_sessions SET proof_expires_at = $2 \
    WHERE id = $1 AND tenant_id = $3 AND state = 'pending' AND proof_expires_at < $2";

const SESSION_STATUS: &str = "SELECT state, end_reason, proof_expires_at FROM auth_sessions WHERE id = $1 AND tenant_id = $2";

const ACTIVATE_SESSION: &str = "UPDATE auth_sessions \
    SET state = 'active', user_id = $3, verified_at = $4, expires_at = $5, code_hash = NULL, link_hash = NULL \
    WHERE id = $1 AND tenant_id = $2 AND state = 'pending'";

const END_SESSION: &str = "UPDATE auth_sessions \
    SET state = 'ended', end_reason = $3, ended_at = $4, code_hash = NULL, link_hash = NULL \
    WHERE id = $1 AND tenant_id = $2 AND state IN ('pending', 'active')";

impl Tx {
    /// Inserts a pending session. Returns the email it gets: `mail_kind`,
    /// or [`MailKind::Suppressed`] when the address is a disabled user's.
    pub async fn insert_session(&mut self, s: &NewSession<'_>) -> Result<MailKind> {
        let kind = on_tx!(self, "insert_session", |conn| {
            sqlx::query_scalar::<_, String>(INSERT_SESSION)
                .bind(s.id)
                .bind(s.tenant_id)
                .bind(s.email)
                .bind(s.method.as_str())
                .bind(s.code_hash)
                .bind(s.link_hash)
                .bind(s.proof_expires_at)
                .bind(s.client_ip)
                .bind(s.user_agent)
                .bind(s.created_at)
                .bind(s.validation_url)
                .bind(s.locale)
                .bind(s.mail_kind.as_str())
                .bind(s.email_change_of)
                .fetch_one(conn)
                .await
        })?;
        MailKind::try_from(kind).map_err(decode_error)
    }

    /// Inserts a session that is active from `now` (a passkey login).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_active_session(
        &mut self,
        id: &str,
        tenant_id: &str,
        user: &UserRow,
        method: Method,
        client_ip: Option<&str>,
        user_agent: Option<&str>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        on_tx!(self, "insert_active_session", |conn| {
            sqlx::query(INSERT_ACTIVE_SESSION)
                .bind(id)
                .bind(tenant_id)
                .bind(&user.email)
                .bind(method.as_str())
                .bind(&user.id)
                .bind(now)
                .bind(client_ip)
                .bind(user_agent)
                .bind(expires_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Counts a code attempt on a pending, unexpired session that has
    /// attempts left, and returns what is needed to check the code. `None`
    /// when the session cannot be verified (unknown, expired, ended, used up).
    pub async fn take_code_attempt(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        now: UnixMillis,
        max_attempts: i32,
    ) -> Result<Option<CodeAttempt>> {
        Ok(on_tx!(self, "take_code_attempt", |conn| {
            sqlx::query_as::<_, CodeAttempt>(TAKE_CODE_ATTEMPT)
                .bind(session_id)
                .bind(tenant_id)
                .bind(now)
                .bind(max_attempts)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Locks a pending session (for a resend).
    pub async fn lock_pending_session(
        &mut self,
        tenant_id: &str,
        session_id: &str,
    ) -> Result<Option<PendingSession>> {
        let row = on_tx!(self, "lock_pending_session", |conn| {
            sqlx::query_as::<_, PendingRow>(LOCK_PENDING)
                .bind(session_id)
                .bind(tenant_id)
                .fetch_optional(conn)
                .await
        })?;
        row.map(|r| {
            Ok(PendingSession {
                mail_kind: r
                    .mail_kind
                    .map(MailKind::try_from)
                    .transpose()
                    .map_err(decode_error)?,
                email: r.email,
                method: r.method,
                validation_url: r.validation_url,
                locale: r.locale,
                created_at: r.created_at,
            })
        })
        .transpose()
    }

    /// Replaces a pending session's proofs (the old ones stop working).
    pub async fn replace_proofs(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        code_hash: Option<&[u8]>,
        link_hash: Option<&[u8]>,
        proof_expires_at: UnixMillis,
    ) -> Result<()> {
        on_tx!(self, "replace_proofs", |conn| {
            sqlx::query(REPLACE_PROOFS)
                .bind(session_id)
                .bind(tenant_id)
                .bind(code_hash)
                .bind(link_hash)
                .bind(proof_expires_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Ends every active session of a user but `except`. Returns how many.
    pub async fn end_user_sessions(
        &mut self,
        tenant_id: &str,
        user_id: &str,
        except: Option<&str>,
        reason: SessionEnd,
        now: UnixMillis,
    ) -> Result<u64> {
        Ok(on_tx!(self, "end_user_sessions", |conn| {
            sqlx::query(END_USER_SESSIONS)
                .bind(tenant_id)
                .bind(user_id)
                // (No session id is empty: `<> ''` excepts none.)
                .bind(except.unwrap_or(""))
                .bind(reason.as_str())
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?)
    }

    /// The pending session of a link token, locked for activation.
    pub async fn take_link(
        &mut self,
        tenant_id: &str,
        link_hash: &[u8],
        now: UnixMillis,
    ) -> Result<Option<LinkedSession>> {
        Ok(on_tx!(self, "take_link", |conn| {
            sqlx::query_as::<_, LinkedSession>(TAKE_LINK)
                .bind(link_hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(conn)
                .await
        })?)
    }

    /// Extends a pending session's proof expiry to `until` (never shortens).
    pub async fn extend_proof(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        until: UnixMillis,
    ) -> Result<()> {
        on_tx!(self, "extend_proof", |conn| {
            sqlx::query(EXTEND_PROOF)
                .bind(session_id)
                .bind(until)
                .bind(tenant_id)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn session_status(
        &mut self,
        tenant_id: &str,
        session_id: &str,
    ) -> Result<Option<SessionStatus>> {
        let row = on_tx!(self, "session_status", |conn| {
            sqlx::query_as::<_, StatusRow>(SESSION_STATUS)
                .bind(session_id)
                .bind(tenant_id)
                .fetch_optional(conn)
                .await
        })?;
        row.map(|r| {
            Ok(SessionStatus {
                state: r.state,
                end_reason: r
                    .end_reason
                    .map(SessionEnd::try_from)
                    .transpose()
                    .map_err(decode_error)?,
                proof_expires_at: r.proof_expires_at,
            })
        })
        .transpose()
    }

    /// Makes a pending session active for `user_id`, wiping its proofs
    /// (single use). False when it was no longer pending.
    pub async fn activate_session(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        user_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool> {
        let done = on_tx!(self, "activate_session", |conn| {
            sqlx::query(ACTIVATE_SESSION)
                .bind(session_id)
                .bind(tenant_id)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Ends a pending or active session. False when it was already ended or
    /// does not exist (ending is idempotent).
    pub async fn end_session(
        &mut self,
        tenant_id: &str,
        session_id: &str,
        reason: SessionEnd,
        now: UnixMillis,
    ) -> Result<bool> {
        let done = on_tx!(self, "end_session", |conn| {
            sqlx::query(END_SESSION)
                .bind(session_id)
                .bind(tenant_id)
                .bind(reason.as_str())
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }
}

impl Store {
    /// A user's sessions, newest first.
    pub async fn user_sessions(
        &self,
        tenant_id: &str,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<SessionRow>> {
        Ok(on_pool!(self, "user_sessions", |pool| {
            sqlx::query_as::<_, SessionRow>(USER_SESSIONS)
                .bind(tenant_id)
                .bind(user_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// A session's state and end of life.
    pub async fn session_state(
        &self,
        tenant_id: &str,
        session_id: &str,
    ) -> Result<Option<(SessionStage, Option<UnixMillis>)>> {
        let row = on_pool!(self, "session_state", |pool| {
            sqlx::query_as::<_, (String, Option<UnixMillis>)>(SESSION_STATE)
                .bind(session_id)
                .bind(tenant_id)
                .fetch_optional(pool)
                .await
        })?;
        row.map(|(state, expires_at)| {
            Ok((
                SessionStage::try_from(state).map_err(decode_error)?,
                expires_at,
            ))
        })
        .transpose()
    }
}
