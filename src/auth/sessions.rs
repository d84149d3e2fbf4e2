//! The sessions API: a user's sessions, ending them, and token
//! introspection for callers that cannot verify JWTs themselves.

use super::{AuthService, input::parse_uuid, tenants::Tenant, tokens::AccessClaims};
use crate::{
    clock::UnixMillis,
    error::AuthError,
    store::{SessionEnd, SessionStage},
};

/// Most sessions ListSessions returns (newest first).
pub const MAX_LISTED_SESSIONS: i64 = 100;

/// Where a session is in its life, as the sessions API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Started, its proof not yet verified (not listed: it has no user yet).
    Pending,
    Active,
    Ended,
    /// Active but past its absolute lifetime.
    Expired,
}

impl SessionState {
    fn of(stage: SessionStage, expires_at: Option<UnixMillis>, now: UnixMillis) -> Self {
        match stage {
            SessionStage::Pending => Self::Pending,
            SessionStage::Active if expires_at.is_some_and(|e| e > now) => Self::Active,
            SessionStage::Active => Self::Expired,
            SessionStage::Ended => Self::Ended,
        }
    }
}

/// A user's session, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub state: SessionState,
    pub end_reason: String,
    pub created_at: UnixMillis,
    pub verified_at: Option<UnixMillis>,
    pub last_refreshed_at: Option<UnixMillis>,
    pub expires_at: Option<UnixMillis>,
    pub ended_at: Option<UnixMillis>,
    pub client_ip: String,
    pub user_agent: String,
}

/// What IntrospectToken found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    /// Present when the token is genuine and the caller's tenant's.
    pub claims: Option<AccessClaims<'static>>,
    pub session_ended: bool,
}

/// Longest token IntrospectToken reads (ours are well under 1 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

impl AuthService {
    /// A user's sessions in the caller's tenant, newest first. An unknown
    /// user has none.
    #[tracing::instrument(name = "list_sessions", skip_all, fields(tenant = %tenant.id))]
    pub async fn list_sessions(
        &self,
        tenant: &Tenant,
        user_id: &str,
    ) -> Result<Vec<SessionInfo>, AuthError> {
        let user_id = parse_uuid(user_id, "user_id")?;
        let now = self.inner.clock.now_ms();
        let rows = self
            .inner
            .store
            .user_sessions(&tenant.id, &user_id, MAX_LISTED_SESSIONS)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SessionInfo {
                state: SessionState::of(r.state, r.expires_at, now),
                id: r.id,
                end_reason: r.end_reason.unwrap_or_default(),
                created_at: r.created_at,
                verified_at: r.verified_at,
                last_refreshed_at: r.last_refreshed_at,
                expires_at: r.expires_at,
                ended_at: r.ended_at,
                client_ip: r.client_ip.unwrap_or_default(),
                user_agent: r.user_agent.unwrap_or_default(),
            })
            .collect())
    }

    /// Ends one session by id. Idempotent, like [`AuthService::revoke`].
    pub async fn revoke_session(&self, tenant: &Tenant, session_id: &str) -> Result<(), AuthError> {
        let session_id = parse_uuid(session_id, "session_id")?;
        self.revoke(tenant, None, Some(&session_id)).await
    }

    /// Ends every active session of a user but `except_session_id` (if
    /// given), in one transaction. Returns how many ended.
    #[tracing::instrument(name = "revoke_all_sessions", skip_all, fields(tenant = %tenant.id))]
    pub async fn revoke_all_sessions(
        &self,
        tenant: &Tenant,
        user_id: &str,
        except_session_id: Option<&str>,
    ) -> Result<u64, AuthError> {
        let user_id = parse_uuid(user_id, "user_id")?;
        let except = except_session_id
            .map(|given| parse_uuid(given, "except_session_id"))
            .transpose()?;
        let now = self.inner.clock.now_ms();
        let mut tx = self.inner.store.begin().await?;
        let ended = tx
            .end_user_sessions(
                &tenant.id,
                &user_id,
                except.as_deref(),
                SessionEnd::Revoked,
                now,
            )
            .await?;
        tx.commit().await?;
        tracing::info!(ended, "sessions revoked");
        Ok(ended)
    }

    /// Checks an access token: genuine (a published key signed it), the
    /// caller tenant's (issuer, audience, `tid`), within its lifetime, and
    /// its session still active. Anything else is inactive, never an error.
    #[tracing::instrument(name = "introspect_token", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn introspect(
        &self,
        tenant: &Tenant,
        token: &str,
    ) -> Result<Introspection, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::invalid("token", "is required"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::invalid(
                "token",
                "is too long to be an access token",
            ));
        }
        let policy = &tenant.policy;
        // Only this tenant's keys: another tenant's token never verifies here.
        let ring = self
            .inner
            .keys
            .ring(&tenant.id)
            .await
            .map_err(AuthError::Internal)?;
        let Some(claims) = ring.verify::<AccessClaims<'static>>(token) else {
            return Ok(Introspection::default());
        };
        if claims.tid != tenant.id || claims.iss != policy.issuer || claims.aud != policy.audience {
            return Ok(Introspection::default());
        }
        tracing::Span::current().record("session_id", &*claims.sid);
        let now = self.inner.clock.now_ms();
        let now_s = now.div_euclid(1000);
        let in_lifetime = claims.nbf <= now_s && now_s < claims.exp;
        let session_active = match self
            .inner
            .store
            .session_state(&tenant.id, &claims.sid)
            .await?
        {
            Some((state, expires_at)) => {
                SessionState::of(state, expires_at, now) == SessionState::Active
            }
            None => false,
        };
        Ok(Introspection {
            active: in_lifetime && session_active,
            session_ended: !session_active,
            claims: Some(claims),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_session_past_its_lifetime_is_expired() {
        assert_eq!(
            SessionState::of(SessionStage::Active, Some(10), 5),
            SessionState::Active
        );
        assert_eq!(
            SessionState::of(SessionStage::Active, Some(10), 10),
            SessionState::Expired
        );
        assert_eq!(
            SessionState::of(SessionStage::Ended, Some(10), 5),
            SessionState::Ended
        );
        assert_eq!(
            SessionState::of(SessionStage::Pending, None, 5),
            SessionState::Pending
        );
    }
}
