//! Tokens: refresh-token rotation, logout, signing access tokens and
//! publishing the keys that verify them.

use std::{borrow::Cow, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{
    AuthService, Tokens, input::parse_uuid, keys::Jwks, secrets::RefreshToken, tenants::Tenant,
};
use crate::{
    clock::{UnixMillis, millis},
    error::AuthError,
    metrics,
    store::{SessionEnd, SessionStage},
};

/// The claims of an access token: what Verify and Refresh sign and what
/// IntrospectToken reads back (owned, `AccessClaims<'static>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims<'a> {
    pub iss: Cow<'a, str>,
    pub aud: Cow<'a, str>,
    pub sub: Cow<'a, str>,
    pub email: Cow<'a, str>,
    pub sid: Cow<'a, str>,
    pub tid: Cow<'a, str>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Cow<'a, str>,
    /// The app's data: the tenant's static claims and the user's
    /// `app_metadata`, merged (see [`super::users::token_claim`]). Absent
    /// when both are empty. Our own claims above are never inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Whom an access token is for.
pub(super) struct Subject<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    /// The user's `app_metadata` (JSON object text).
    pub app_metadata: Option<&'a str>,
}

/// How a refresh was answered.
enum Rotation {
    /// The presented token was used up and a successor issued.
    Rotated,
    /// A retry inside the grace window: the successor already issued.
    Retried,
}

impl AuthService {
    /// Rotates a refresh token: the presented one is marked used and a
    /// successor is issued, in one transaction. A used token presented again
    /// inside the grace window gets the same successor (nothing new is
    /// minted); after it, the whole session ends.
    #[tracing::instrument(name = "refresh", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn refresh(&self, tenant: &Tenant, refresh_token: &str) -> Result<Tokens, AuthError> {
        let result = match self.signing_keys_ready(tenant).await {
            Ok(()) => self.rotate(tenant, refresh_token).await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok((_, Rotation::Retried)) => "retried",
            Ok((_, Rotation::Rotated)) => "ok",
            Err(AuthError::RefreshTokenInvalid) => "invalid",
            Err(AuthError::RefreshTokenReused) => "reused",
            Err(AuthError::UserDisabled) => "user_disabled",
            Err(AuthError::InvalidArgument { .. }) => "bad_input",
            Err(_) => "error",
        };
        metrics::count(metrics::REFRESHES, "result", outcome);
        result.map(|(tokens, _)| tokens)
    }

    /// [`Self::refresh`] without the metrics.
    async fn rotate(
        &self,
        tenant: &Tenant,
        refresh_token: &str,
    ) -> Result<(Tokens, Rotation), AuthError> {
        let inner = &self.inner;
        let presented = RefreshToken::parse(refresh_token, "refresh_token")?;
        let presented_hash = presented.hash();
        let now = inner.clock.now_ms();
        let successor = RefreshToken::generate();
        let sealed = presented.seal_successor(&successor);

        let mut tx = inner.store.begin().await?;
        if let Some(session_id) = tx
            .rotate_refresh_token(&tenant.id, &presented_hash, &sealed, now)
            .await?
        {
            tracing::Span::current().record("session_id", session_id.as_str());
            let Some(session) = tx
                .touch_active_session(&tenant.id, &session_id, now)
                .await?
            else {
                // Ended or expired session: roll back, the token stays as it
                // was. Its user may have been disabled since.
                drop(tx);
                let disabled = inner
                    .store
                    .find_refresh_token(&tenant.id, &presented_hash)
                    .await?
                    .is_some_and(|t| t.user_disabled_at.is_some());
                return Err(if disabled {
                    AuthError::UserDisabled
                } else {
                    AuthError::RefreshTokenInvalid
                });
            };
            tx.insert_refresh_token(&tenant.id, &session_id, &successor.hash(), now)
                .await?;
            let (access_token, expires_in) = self.sign_access_token(
                tenant,
                Subject {
                    user_id: &session.user_id,
                    email: &session.email,
                    app_metadata: session.app_metadata.as_deref(),
                },
                &session_id,
                now,
                session.expires_at,
            )?;
            tx.commit().await?;
            let tokens = Tokens {
                access_token,
                expires_in,
                refresh_token: successor,
            };
            return Ok((tokens, Rotation::Rotated));
        }
        drop(tx);

        // Unknown, or already used.
        let Some(used) = inner
            .store
            .find_refresh_token(&tenant.id, &presented_hash)
            .await?
        else {
            return Err(AuthError::RefreshTokenInvalid);
        };
        tracing::Span::current().record("session_id", used.session_id.as_str());
        if used.user_disabled_at.is_some() {
            return Err(AuthError::UserDisabled);
        }
        let (Some(rotated_at), Some(user_id), Some(expires_at)) =
            (used.rotated_at, used.user_id, used.expires_at)
        else {
            return Err(AuthError::RefreshTokenInvalid);
        };
        if used.state != SessionStage::Active || expires_at <= now {
            return Err(AuthError::RefreshTokenInvalid);
        }
        if now - rotated_at <= millis(tenant.policy.refresh_reuse_grace) {
            let successor = used
                .successor_sealed
                .as_deref()
                .and_then(|sealed| presented.open_successor(sealed))
                .ok_or(AuthError::RefreshTokenInvalid)?;
            // A late retry after the client already used the successor must
            // not hand it back: the client would store a used token and the
            // next refresh would end its session as a theft.
            let successor_used = inner
                .store
                .find_refresh_token(&tenant.id, &successor.hash())
                .await?
                .is_some_and(|s| s.rotated_at.is_some());
            if successor_used {
                return Err(AuthError::RefreshTokenInvalid);
            }
            let (access_token, expires_in) = self.sign_access_token(
                tenant,
                Subject {
                    user_id: &user_id,
                    email: &used.email,
                    app_metadata: used.app_metadata.as_deref(),
                },
                &used.session_id,
                now,
                expires_at,
            )?;
            tracing::info!("refresh token retried within the grace window");
            let tokens = Tokens {
                access_token,
                expires_in,
                refresh_token: successor,
            };
            return Ok((tokens, Rotation::Retried));
        }
        let mut tx = inner.store.begin().await?;
        tx.end_session(
            &tenant.id,
            &used.session_id,
            SessionEnd::RefreshTokenReused,
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::warn!("refresh token reused after rotation: session ended");
        Err(AuthError::RefreshTokenReused)
    }

    /// Ends a session (logout), found by a refresh token of it or its id.
    /// Idempotent: an ended or unknown session is not an error.
    #[tracing::instrument(name = "revoke", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn revoke(
        &self,
        tenant: &Tenant,
        refresh_token: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        let token = refresh_token
            .map(|t| RefreshToken::parse(t, "refresh_token"))
            .transpose()?;
        let session_id = session_id
            .map(|id| parse_uuid(id, "session_id"))
            .transpose()?;
        if token.is_none() && session_id.is_none() {
            return Err(AuthError::invalid(
                "refresh_token",
                "give refresh_token or session_id",
            ));
        }

        let now = inner.clock.now_ms();
        let mut tx = inner.store.begin().await?;
        let of_token = match &token {
            Some(t) => tx.session_of_refresh_token(&tenant.id, &t.hash()).await?,
            None => None,
        };
        let target = match (of_token, session_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(AuthError::invalid(
                    "session_id",
                    "the refresh token belongs to another session",
                ));
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        let Some(target) = target else {
            return Ok(());
        };
        tracing::Span::current().record("session_id", target.as_str());
        let ended = tx
            .end_session(&tenant.id, &target, SessionEnd::Revoked, now)
            .await?;
        tx.commit().await?;
        if ended {
            tracing::info!("session revoked");
        }
        Ok(())
    }

    /// The signing keys `tenant_id` publishes.
    pub async fn jwks(&self, tenant_id: &str) -> Result<Arc<Jwks>, AuthError> {
        if self.inner.tenants.get(tenant_id).is_none() {
            return Err(AuthError::NotFound("tenant"));
        }
        let ring = self
            .inner
            .keys
            .ring(tenant_id)
            .await
            .map_err(AuthError::Internal)?;
        Ok(ring.jwks())
    }

    /// The tenant's signing keys, loaded (or its first key made) now if this
    /// process has not yet: before any transaction begins, so signing inside
    /// one never waits on the database.
    pub(super) async fn signing_keys_ready(&self, tenant: &Tenant) -> Result<(), AuthError> {
        self.inner
            .keys
            .ring(&tenant.id)
            .await
            .map(|_| ())
            .map_err(AuthError::Internal)
    }

    /// Signs an access token for a session, never outliving the session.
    pub(super) fn sign_access_token(
        &self,
        tenant: &Tenant,
        subject: Subject<'_>,
        session_id: &str,
        now: UnixMillis,
        session_expires_at: UnixMillis,
    ) -> Result<(String, i32), AuthError> {
        let Subject {
            user_id,
            email,
            app_metadata,
        } = subject;
        let policy = &tenant.policy;
        let iat = now / 1000;
        let exp = ((now + millis(policy.access_token_ttl)).min(session_expires_at)) / 1000;
        let claims = AccessClaims {
            iss: Cow::Borrowed(&policy.issuer),
            aud: Cow::Borrowed(&policy.audience),
            sub: Cow::Borrowed(user_id),
            email: Cow::Borrowed(email),
            sid: Cow::Borrowed(session_id),
            tid: Cow::Borrowed(&tenant.id),
            iat,
            nbf: iat,
            exp,
            jti: Cow::Owned(uuid::Uuid::now_v7().to_string()),
            app_metadata: super::users::token_claim(&policy.static_claims, app_metadata),
        };
        let ring = self.inner.keys.get(&tenant.id).ok_or_else(|| {
            AuthError::Internal(anyhow::anyhow!(
                "the signing keys of tenant {} are not loaded",
                tenant.id
            ))
        })?;
        let token = ring.sign(&claims).map_err(AuthError::Internal)?;
        let expires_in = i32::try_from(exp - iat).unwrap_or(i32::MAX).max(0);
        Ok((token, expires_in))
    }
}
