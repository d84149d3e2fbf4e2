//! Transports over the domain. [`Api`] is the AuthService surface in proto
//! terms: it converts proto messages to domain calls and back, once. The gRPC
//! adapter (`grpc`) and the JSON gateway (`rest`) are thin layers over it that
//! only differ in framing and in how they spell an [`crate::error::ErrorCode`]
//! (each maps it exhaustively). No business rule lives here.

pub mod admin;
pub mod grpc;
pub mod openapi;
mod passkeys;
pub mod rest;
pub mod rpcs;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    auth::{self, AuthService, apikeys::Scope, keys::Jwks, tenants::Tenant},
    clock::UnixMillis,
    error::AuthError,
    proto,
};

/// proto3 has no absent string: an empty (or blank) one means "not given".
fn given(text: String) -> Option<String> {
    Some(text).filter(|t| !t.trim().is_empty())
}

/// Tenant id -> (key set version, GetJwks response).
type JwksCache = HashMap<String, (u64, Arc<proto::GetJwksResponse>)>;

/// The AuthService operations on proto messages, for an authenticated
/// caller's tenant (see [`Api::caller`]). Cheap to clone.
#[derive(Clone)]
pub struct Api {
    auth: AuthService,
    /// Each tenant's GetJwks response, rebuilt only when its key set changes.
    jwks: Arc<Mutex<JwksCache>>,
}

impl Api {
    pub fn new(auth: AuthService) -> Self {
        Self {
            auth,
            jwks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub async fn start_auth(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::StartAuthRequest,
    ) -> Result<proto::StartAuthResponse, AuthError> {
        let method = method_of(req.method)?;
        let client = req.client.unwrap_or_default();
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let started = to_completion(async move {
            auth.start_auth(
                &tenant,
                auth::StartAuth {
                    email: req.email,
                    method,
                    validation_url: given(req.validation_url),
                    client: client_of(client),
                    locale: given(req.locale),
                    idempotency_key: given(req.idempotency_key),
                    email_change_of: None,
                },
            )
            .await
        })
        .await?;
        Ok(proto::StartAuthResponse {
            session_id: started.session_id,
            expires_at: Some(timestamp(started.expires_at)),
            code_length: u32::from(started.code_length),
        })
    }

    pub async fn verify(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::VerifyRequest,
    ) -> Result<proto::VerifyResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let verified = to_completion(async move {
            auth.verify(
                &tenant,
                auth::VerifyProof {
                    session_id: given(req.session_id),
                    code: given(req.code),
                    link_token: given(req.link_token),
                },
            )
            .await
        })
        .await?;
        Ok(verified_to_proto(verified))
    }

    pub async fn refresh(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::RefreshRequest,
    ) -> Result<proto::RefreshResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let tokens =
            to_completion(async move { auth.refresh(&tenant, &req.refresh_token).await }).await?;
        Ok(proto::RefreshResponse {
            token: tokens.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: tokens.expires_in,
            refresh_token: tokens.refresh_token.into_string(),
        })
    }

    pub async fn revoke(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::RevokeRequest,
    ) -> Result<proto::RevokeResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        to_completion(async move {
            auth.revoke(
                &tenant,
                given(req.refresh_token).as_deref(),
                given(req.session_id).as_deref(),
            )
            .await
        })
        .await?;
        Ok(proto::RevokeResponse {})
    }

    pub async fn resend_code(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::ResendCodeRequest,
    ) -> Result<proto::ResendCodeResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let started =
            to_completion(async move { auth.resend_code(&tenant, &req.session_id).await }).await?;
        Ok(proto::ResendCodeResponse {
            session_id: started.session_id,
            expires_at: Some(timestamp(started.expires_at)),
            code_length: u32::from(started.code_length),
        })
    }

    pub async fn list_sessions(
        &self,
        tenant: &Tenant,
        req: proto::ListSessionsRequest,
    ) -> Result<proto::ListSessionsResponse, AuthError> {
        use auth::sessions::SessionState;
        let sessions = self.auth.list_sessions(tenant, &req.user_id).await?;
        Ok(proto::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| proto::Session {
                    id: s.id,
                    state: match s.state {
                        SessionState::Pending => proto::SessionState::Unspecified,
                        SessionState::Active => proto::SessionState::Active,
                        SessionState::Ended => proto::SessionState::Ended,
                        SessionState::Expired => proto::SessionState::Expired,
                    }
                    .into(),
                    end_reason: s.end_reason,
                    created_at: Some(timestamp(s.created_at)),
                    verified_at: s.verified_at.map(timestamp),
                    last_refreshed_at: s.last_refreshed_at.map(timestamp),
                    expires_at: s.expires_at.map(timestamp),
                    ended_at: s.ended_at.map(timestamp),
                    client: Some(proto::ClientInfo {
                        ip: s.client_ip,
                        user_agent: s.user_agent,
                    }),
                })
                .collect(),
        })
    }

    pub async fn revoke_session(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::RevokeSessionRequest,
    ) -> Result<proto::RevokeSessionResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        to_completion(async move { auth.revoke_session(&tenant, &req.session_id).await }).await?;
        Ok(proto::RevokeSessionResponse {})
    }

    pub async fn revoke_all_sessions(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::RevokeAllSessionsRequest,
    ) -> Result<proto::RevokeAllSessionsResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let revoked = to_completion(async move {
            auth.revoke_all_sessions(
                &tenant,
                &req.user_id,
                given(req.except_session_id).as_deref(),
            )
            .await
        })
        .await?;
        Ok(proto::RevokeAllSessionsResponse {
            revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        })
    }

    pub async fn introspect_token(
        &self,
        tenant: &Tenant,
        req: proto::IntrospectTokenRequest,
    ) -> Result<proto::IntrospectTokenResponse, AuthError> {
        let found = self.auth.introspect(tenant, &req.token).await?;
        let seconds = |s: i64| pbjson_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        Ok(proto::IntrospectTokenResponse {
            active: found.active,
            session_ended: found.session_ended,
            claims: found.claims.map(|c| proto::TokenClaims {
                iss: c.iss.into_owned(),
                aud: c.aud.into_owned(),
                sub: c.sub.into_owned(),
                email: c.email.into_owned(),
                sid: c.sid.into_owned(),
                tid: c.tid.into_owned(),
                iat: Some(seconds(c.iat)),
                nbf: Some(seconds(c.nbf)),
                exp: Some(seconds(c.exp)),
                jti: c.jti.into_owned(),
                app_metadata: c
                    .app_metadata
                    .map(|m| serde_json::Value::Object(m).to_string())
                    .unwrap_or_default(),
            }),
        })
    }

    pub async fn start_email_change(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::StartEmailChangeRequest,
    ) -> Result<proto::StartEmailChangeResponse, AuthError> {
        let method = method_of(req.method)?;
        let client = client_of(req.client.unwrap_or_default());
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let started = to_completion(async move {
            auth.start_auth(
                &tenant,
                auth::StartAuth {
                    email: req.new_email,
                    method,
                    validation_url: given(req.validation_url),
                    client,
                    locale: given(req.locale),
                    idempotency_key: None,
                    email_change_of: Some(req.user_id),
                },
            )
            .await
        })
        .await?;
        Ok(proto::StartEmailChangeResponse {
            session_id: started.session_id,
            expires_at: Some(timestamp(started.expires_at)),
            code_length: u32::from(started.code_length),
        })
    }

    pub async fn get_user(
        &self,
        tenant: &Tenant,
        req: proto::AuthServiceGetUserRequest,
    ) -> Result<proto::AuthServiceGetUserResponse, AuthError> {
        let user = self
            .auth
            .get_user(
                tenant,
                given(req.user_id).as_deref(),
                given(req.email).as_deref(),
            )
            .await?;
        Ok(proto::AuthServiceGetUserResponse {
            user: Some(user_to_proto(user)),
        })
    }

    pub async fn update_user(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::AuthServiceUpdateUserRequest,
    ) -> Result<proto::AuthServiceUpdateUserResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let user = to_completion(async move {
            auth.update_user(&tenant, &req.user_id, &req.app_metadata)
                .await
        })
        .await?;
        Ok(proto::AuthServiceUpdateUserResponse {
            user: Some(user_to_proto(user)),
        })
    }

    /// The caller's tenant, from the `authorization` header value (gRPC
    /// metadata or HTTP header): both transports check keys here, before
    /// reading the request, with the same rule.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Arc<Tenant>, AuthError> {
        self.auth.authenticate(authorization, scope)
    }

    /// The GetJwks response of a tenant (built once per key change).
    pub async fn get_jwks(
        &self,
        tenant_id: &str,
    ) -> Result<Arc<proto::GetJwksResponse>, AuthError> {
        let jwks = self.auth.jwks(tenant_id).await?;
        let mut cache = self.jwks.lock().expect("jwks cache lock");
        if let Some((version, response)) = cache.get(tenant_id)
            && *version == jwks.version
        {
            return Ok(response.clone());
        }
        {
            let keys = jwks
                .keys
                .iter()
                .map(|k| proto::Jwk {
                    kty: k.kty.clone(),
                    crv: k.crv.clone(),
                    x: k.x.clone(),
                    y: k.y.clone(),
                    n: k.n.clone(),
                    e: k.e.clone(),
                    kid: k.kid.clone(),
                    alg: k.alg.clone(),
                    r#use: k.use_.clone(),
                })
                .collect();
            let response = Arc::new(proto::GetJwksResponse { keys });
            cache.insert(tenant_id.to_owned(), (jwks.version, response.clone()));
            Ok(response)
        }
    }

    /// A tenant's key set in its RFC 7517 JSON form, serialised once per
    /// change.
    pub async fn jwks_document(&self, tenant_id: &str) -> Result<Arc<Jwks>, AuthError> {
        self.auth.jwks(tenant_id).await
    }
}

/// Runs a write call's domain work in a task of its own, which the request
/// only awaits. When the caller goes away mid-call (a gRPC stream reset, an
/// HTTP connection closed) the transport drops the request future, but not
/// the task: the transaction commits or rolls back as it would have, and its
/// connection goes back to the pool clean. (A database future dropped
/// between sending BEGIN or COMMIT and reading the answer leaves the
/// connection in a transaction the driver does not know about, or rolls
/// back one already committed: PostgreSQL warns "there is already / no
/// transaction in progress", and the next statements on that connection can
/// run in a transaction nobody commits.) Both transports call through
/// [`Api`], so this is the one place for every AuthService write; the
/// AdminService (gRPC only) runs its writes through it too.
pub(crate) async fn to_completion<T, F>(work: F) -> Result<T, AuthError>
where
    F: Future<Output = Result<T, AuthError>> + Send + 'static,
    T: Send + 'static,
{
    use tracing::Instrument;
    match tokio::spawn(work.in_current_span()).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime itself is shutting down.
            Err(e) => Err(AuthError::Internal(e.into())),
        },
    }
}

/// Whether the service should receive traffic: it serves and shutdown has
/// not begun (whatever the database does). Read by both health surfaces.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A login's answer (Verify's; FinishPasskeyLogin repeats its fields).
fn verified_to_proto(verified: auth::Verified) -> proto::VerifyResponse {
    proto::VerifyResponse {
        token: verified.tokens.access_token,
        token_type: "Bearer".to_owned(),
        expires_in: verified.tokens.expires_in,
        refresh_token: verified.tokens.refresh_token.into_string(),
        user: Some(user_to_proto(verified.user)),
        session_id: verified.session_id,
        new_user: verified.new_user,
    }
}

/// The proof a login asks for (`None`: the server chooses).
fn method_of(method: i32) -> Result<Option<auth::Method>, AuthError> {
    match proto::Method::try_from(method) {
        Ok(proto::Method::Unspecified) => Ok(None),
        Ok(proto::Method::Code) => Ok(Some(auth::Method::Code)),
        Ok(proto::Method::Link) => Ok(Some(auth::Method::Link)),
        Ok(proto::Method::CodeAndLink) => Ok(Some(auth::Method::CodeAndLink)),
        Err(_) => Err(AuthError::invalid("method", "unknown method")),
    }
}

fn client_of(client: proto::ClientInfo) -> auth::ClientInfo {
    auth::ClientInfo {
        ip: given(client.ip),
        // (Only empty is absent: blanks and control characters are the
        // domain's to refuse.)
        user_agent: Some(client.user_agent).filter(|ua| !ua.is_empty()),
    }
}

/// A user as both services return it.
pub(crate) fn user_to_proto(user: auth::User) -> proto::User {
    proto::User {
        id: user.id,
        email: user.email,
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
        disabled_at: user.disabled_at.map(timestamp),
        app_metadata: user.app_metadata,
    }
}

fn timestamp(ms: UnixMillis) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_milliseconds_into_seconds_and_nanos() {
        let ts = timestamp(1_700_000_000_123);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
    }
}
