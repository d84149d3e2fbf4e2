//! The domain: the login flows and their rules. Transports (`api/`) call these
//! functions with plain values; nothing here knows about gRPC or HTTP, and
//! SQL stays behind [`crate::store`].
//!
//! Every write operation is exactly one database transaction.

pub mod admin;
pub mod apikeys;
pub mod email;
mod email_change;
mod input;
pub mod keys;
pub mod limits;
pub mod links;
mod login;
pub mod passkeys;
pub mod payload;
mod policy;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod tenants;
pub mod tokens;
mod upkeep;
pub mod users;
mod verify;

pub use crate::store::Method;
pub use policy::Policy;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{
    clock::{Clock, UnixMillis},
    error::AuthError,
    kek::Kek,
    store::Store,
};
use apikeys::{ApiKeys, Scope};
use keys::KeyRings;
use secrets::{CodeHasher, RefreshToken};
use tenants::{Tenant, Tenants};

/// The tenant of a single-app deployment (created by the first migration).
pub const DEFAULT_TENANT: &str = "default";

/// Longest accepted `client.user_agent`.
pub const MAX_USER_AGENT_LEN: usize = 512;
/// Longest accepted `validation_url`.
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted `idempotency_key` (printable ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Longest one-time code a policy may ask for.
pub const MAX_CODE_LENGTH: u8 = 10;

/// The end user's client as the calling backend saw it (both optional).
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A StartAuth request, as received. (Transports pass an absent or blank
/// optional value as `None`.)
#[derive(Clone, Debug)]
pub struct StartAuth {
    pub email: String,
    /// `None`: let the server choose.
    pub method: Option<Method>,
    /// `None`: the tenant's default, if any.
    pub validation_url: Option<String>,
    pub client: ClientInfo,
    /// The email's language; `None`: the tenant's default.
    pub locale: Option<String>,
    /// Makes retries of this request return its first answer (24 h).
    pub idempotency_key: Option<String>,
    /// A change of address (StartEmailChange): the user whose new address
    /// `email` is.
    pub email_change_of: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Started {
    pub session_id: String,
    pub expires_at: UnixMillis,
    pub code_length: u8,
}

/// The proof presented to Verify.
#[derive(Clone)]
pub struct VerifyProof {
    /// Required with a code; with a link, checked when given.
    pub session_id: Option<String>,
    pub code: Option<String>,
    pub link_token: Option<String>,
}

impl std::fmt::Debug for VerifyProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyProof")
            .field("session_id", &self.session_id)
            .field("code", &"[redacted]")
            .field("link_token", &"[redacted]")
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub created_at: UnixMillis,
    /// When its metadata last changed, or it was disabled or enabled.
    pub updated_at: UnixMillis,
    /// Set while the user may not log in.
    pub disabled_at: Option<UnixMillis>,
    /// A JSON object set by the app (`{}`: none), copied into access tokens.
    pub app_metadata: String,
}

/// An access token and the refresh token that goes with it.
#[derive(Clone)]
pub struct Tokens {
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i32,
    pub refresh_token: RefreshToken,
}

pub struct Verified {
    pub tokens: Tokens,
    pub user: User,
    pub session_id: String,
    pub new_user: bool,
}

/// The login service. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    keys: KeyRings,
    tenants: Tenants,
    api_keys: ApiKeys,
    users: users::Users,
    codes: CodeHasher,
    limit_keys: limits::KeyHasher,
    ceiling: limits::TenantCeiling,
    refusals: limits::Refusals,
    kek: Kek,
    clock: Clock,
    /// Wakes the outbox worker after a commit that queued mail.
    outbox_wake: Arc<Notify>,
    /// When this process last woke the other replicas' workers.
    last_notify: std::sync::atomic::AtomicI64,
}

/// Other replicas' workers are woken at most this often by one process:
/// PostgreSQL serialises the commits of notifying transactions, and the
/// local worker (woken in-process every time) is there anyway.
const NOTIFY_EVERY_MS: i64 = 100;

/// What the service is built from.
pub struct Parts {
    pub store: Store,
    pub keys: KeyRings,
    pub tenants: Tenants,
    pub api_keys: ApiKeys,
    pub kek: Kek,
    pub clock: Clock,
    pub outbox_wake: Arc<Notify>,
}

impl AuthService {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            store,
            keys,
            tenants,
            api_keys,
            kek,
            clock,
            outbox_wake,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                codes: CodeHasher::new(kek.derive("code-hmac")),
                limit_keys: limits::KeyHasher::new(kek.derive("rate-limit-keys")),
                ceiling: limits::TenantCeiling::default(),
                refusals: limits::Refusals::default(),
                users: users::Users::new(store.clone(), clock.clone()),
                store,
                keys,
                tenants,
                api_keys,
                kek,
                clock,
                outbox_wake,
                last_notify: std::sync::atomic::AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Whether this enqueue should also wake the other replicas.
    fn should_notify_replicas(&self, now: UnixMillis) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.inner.last_notify.load(Ordering::Relaxed);
        now.saturating_sub(last) >= NOTIFY_EVERY_MS
            && self
                .inner
                .last_notify
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }

    /// A user of the caller's tenant, by id or else by address (another
    /// tenant's user is not found).
    pub async fn get_user(
        &self,
        tenant: &Tenant,
        id: Option<&str>,
        email: Option<&str>,
    ) -> Result<User, AuthError> {
        self.inner.users.get(&tenant.id, id, email).await
    }

    /// Replaces the metadata of a user of the caller's tenant.
    pub async fn update_user(
        &self,
        tenant: &Tenant,
        id: &str,
        app_metadata: &str,
    ) -> Result<User, AuthError> {
        self.inner
            .users
            .update_metadata(&tenant.id, id, app_metadata)
            .await
    }

    /// The caller's tenant, from an `authorization: Bearer <key>` value. Only
    /// keys of `scope` are accepted; every kind of bad key gets the same
    /// UNAUTHENTICATED, a good key of the wrong scope PERMISSION_DENIED.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Arc<Tenant>, AuthError> {
        let caller = self.inner.api_keys.authenticate(authorization)?;
        if caller.scope != scope {
            return Err(AuthError::PermissionDenied(match scope {
                Scope::App => "admin keys cannot call the AuthService: use an app key",
                Scope::Admin => "this needs an admin key",
            }));
        }
        self.inner
            .tenants
            .get(&caller.tenant_id)
            .ok_or(AuthError::Unauthenticated)
    }
}
