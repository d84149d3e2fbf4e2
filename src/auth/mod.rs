//! The domain: the login flows and their rules. Transports (`api/`) call these
//! functions with plain values; nothing here knows about gRPC or HTTP, and
//! SQL stays behind [`crate::store`].
//!
//! Every write operation is exactly one database transaction.

pub mod admin;
pub mod apikeys;
pub mod email;
pub mod keys;
pub mod limits;
pub mod links;
pub mod secrets;
pub mod sessions;
pub mod tenants;

use std::{net::IpAddr, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    clock::{Clock, UnixMillis, millis},
    config::Settings,
    error::AuthError,
    kek::Kek,
    mail::{self, SignInPayload},
    metrics,
    store::{NewIdempotencyKey, NewMail, NewSession, SessionEnd, Store},
};
use apikeys::{ApiKeys, Scope};
use email::EmailAddress;
use keys::{Jwks, KeyRings};
use secrets::{CodeHasher, RefreshToken};
use tenants::{SignupPolicy, Tenant, Tenants};

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

/// The rules a tenant's logins follow: the server defaults, overridden by
/// the tenant's settings ([`tenants::TenantSettings::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub session_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub code_length: u8,
    pub code_ttl: Duration,
    /// However late the email goes out, a proof never works longer than
    /// this after StartAuth.
    pub code_max_age: Duration,
    pub code_max_attempts: u32,
    pub mail_from: String,
    pub app_name: String,
    pub allowed_validation_urls: links::Allowlist,
    pub default_validation_url: Option<String>,
    pub default_locale: String,
    pub signup_policy: SignupPolicy,
    pub notify_unknown_address: bool,
    pub limits: limits::Limits,
}

impl Policy {
    /// The server defaults.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            access_token_ttl: s.access_token_ttl,
            session_ttl: s.session_ttl,
            refresh_reuse_grace: s.refresh_reuse_grace,
            code_length: s.code_length,
            code_ttl: s.code_ttl,
            code_max_age: s.code_max_age,
            code_max_attempts: s.code_max_attempts,
            mail_from: s.mail_from.clone(),
            app_name: s.app_name.clone(),
            // (Checked by Settings::validate.)
            allowed_validation_urls: links::Allowlist::parse(&s.allowed_validation_urls)
                .unwrap_or_default(),
            default_validation_url: s.default_validation_url.clone(),
            default_locale: s.default_locale.clone(),
            signup_policy: SignupPolicy::LoginOrCreate,
            notify_unknown_address: false,
            limits: limits::Limits {
                window: s.rate_limit_window,
                per_email: s.rate_limit_email,
                per_ip: s.rate_limit_ip,
                per_tenant_minute: s.rate_limit_tenant,
                failure_budget: s.verify_failure_budget,
                backoff_max: s.verify_backoff_max,
            },
        }
    }
}

/// How the user proves they own the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Code,
    Link,
    CodeAndLink,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Link => "link",
            Self::CodeAndLink => "code_and_link",
        }
    }
}

/// The end user's client as the calling backend saw it (both optional).
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// A StartAuth request, as received.
#[derive(Clone, Debug)]
pub struct StartAuth {
    pub email: String,
    /// `None`: let the server choose.
    pub method: Option<Method>,
    pub validation_url: String,
    pub client: ClientInfo,
    /// The email's language; empty: the tenant's default.
    pub locale: String,
    /// Makes retries of this request return its first answer (24 h).
    pub idempotency_key: String,
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
    pub session_id: String,
    pub code: String,
    pub link_token: String,
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

/// A session's new proofs: the secrets (for the email) and their hashes
/// (for the database).
struct Proofs {
    code: Option<String>,
    code_hash: Option<[u8; 32]>,
    link: Option<String>,
    link_hash: Option<[u8; 32]>,
}

/// How long an idempotency key answers with its first result.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The claims of an access token.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: &'a str,
    sid: &'a str,
    tid: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
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

    /// Starts a login: one transaction writes the pending session and the
    /// email carrying its code; the worker is woken to send it.
    #[tracing::instrument(name = "start_auth", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn start_auth(&self, tenant: &Tenant, req: StartAuth) -> Result<Started, AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let email = EmailAddress::parse(&req.email)?;
        if req.validation_url.len() > MAX_URL_LEN {
            return Err(AuthError::invalid(
                "validation_url",
                "must be at most 2048 characters",
            ));
        }
        let client_ip = parse_client_ip(&req.client.ip)?;
        let user_agent = parse_user_agent(&req.client.user_agent)?;
        let locale = req.locale.trim();
        if !locale.is_empty() && !links::is_locale(locale) {
            return Err(AuthError::invalid(
                "locale",
                "must be a language tag like `en` or `pt-BR`",
            ));
        }
        let locale = if locale.is_empty() {
            policy.default_locale.as_str()
        } else {
            locale
        };
        // The request's validation URL, else the tenant's default; a given
        // one must be allowed even when only a code is sent.
        let validation_url = match req.validation_url.trim() {
            "" => policy.default_validation_url.as_deref(),
            given => Some(given),
        };
        let validation_url = match validation_url {
            Some(url) => Some(
                policy
                    .allowed_validation_urls
                    .check(url)
                    .map_err(AuthError::ValidationUrlNotAllowed)?,
            ),
            None => None,
        };
        let method = req.method.unwrap_or(if validation_url.is_some() {
            Method::CodeAndLink
        } else {
            Method::Code
        });
        let (wants_code, wants_link) = match method {
            Method::Code => (true, false),
            Method::Link => (false, true),
            Method::CodeAndLink => (true, true),
        };
        if wants_link && validation_url.is_none() {
            return Err(AuthError::invalid(
                "validation_url",
                "is required for a magic link (no default is configured)",
            ));
        }

        let idempotency_key = parse_idempotency_key(&req.idempotency_key)?;
        // What makes a retry "the same request".
        let fingerprint = request_fingerprint(&[
            email.as_str(),
            method.as_str(),
            validation_url.as_ref().map_or("", |u| u.as_str()),
            locale,
        ]);

        let now = inner.clock.now_ms();
        // Every address counts, known or not, so limits reveal nothing.
        let counters = inner
            .limit_keys
            .for_send(&policy.limits, email.as_str(), client_ip, now);
        // (A retry with an idempotency key gets its first answer even when
        // the address is limited by now, so it goes to the database.)
        if idempotency_key.is_none() {
            self.known_refusal(tenant, &counters, now)?;
        }
        let session_id = uuid::Uuid::now_v7().to_string();
        let expires_at = now + millis(policy.code_ttl);
        let mut tx = inner.store.begin().await?;
        if let Some(key) = idempotency_key {
            let claim = NewIdempotencyKey {
                key,
                request_hash: &fingerprint,
                session_id: &session_id,
                answer_expires_at: expires_at,
                now,
                expires_at: now + millis(IDEMPOTENCY_TTL),
            };
            if !tx.claim_idempotency_key(&tenant.id, &claim).await? {
                // A retry: the first answer again, nothing sent or counted.
                let first = tx
                    .existing_idempotency_key(&tenant.id, key)
                    .await?
                    .ok_or_else(|| {
                        AuthError::Internal(anyhow::anyhow!("idempotency key vanished"))
                    })?;
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    first.request_hash.as_slice(),
                    fingerprint.as_slice(),
                )) {
                    return Err(AuthError::IdempotencyKeyReused);
                }
                tracing::info!(session_id = %first.session_id, "StartAuth replayed by its idempotency key");
                return Ok(Started {
                    session_id: first.session_id,
                    expires_at: first.answer_expires_at,
                    code_length: policy.code_length,
                });
            }
        }
        self.check_limits(&mut tx, tenant, &counters, now).await?;

        tracing::Span::current().record("session_id", session_id.as_str());
        let proofs = self.new_proofs(
            policy,
            &session_id,
            wants_code,
            wants_link,
            validation_url.as_ref(),
        );
        // Login-only: an unknown address gets the same answer and the same
        // database work (a session nobody can verify, an outbox row), but
        // the row is a "no account" notice or nothing at all, never a proof.
        let kind = match policy.signup_policy {
            SignupPolicy::LoginOrCreate => mail::KIND_SIGN_IN,
            SignupPolicy::LoginOnly => {
                if tx.user_exists(&tenant.id, email.as_str()).await? {
                    mail::KIND_SIGN_IN
                } else if policy.notify_unknown_address {
                    mail::KIND_NO_ACCOUNT
                } else {
                    mail::KIND_SUPPRESSED
                }
            }
        };
        tx.insert_session(&NewSession {
            id: &session_id,
            tenant_id: &tenant.id,
            email: email.as_str(),
            method: method.as_str(),
            code_hash: proofs.code_hash.as_ref().map(|h| h.as_slice()),
            link_hash: proofs.link_hash.as_ref().map(|h| h.as_slice()),
            proof_expires_at: expires_at,
            client_ip: client_ip.map(|ip| ip.to_string()).as_deref(),
            user_agent,
            created_at: now,
            validation_url: validation_url.as_ref().map(|u| u.as_str()),
            locale,
            mail_kind: kind,
        })
        .await?;
        self.queue_mail(
            &mut tx,
            tenant,
            &session_id,
            email.as_str(),
            kind,
            proofs,
            locale,
            now,
            now,
        )
        .await?;
        self.commit_mail(tx, tenant, kind, now).await?;
        tracing::info!(email = %email.masked(), method = method.as_str(), "login started");
        metrics::count(metrics::LOGINS_STARTED, "method", method.as_str());

        Ok(Started {
            session_id,
            expires_at,
            code_length: policy.code_length,
        })
    }

    /// Sends a pending login's email again with new proofs (the old ones
    /// stop working), within the same limits as StartAuth. The session's
    /// wrong-code count is kept: a resend buys no extra guesses.
    #[tracing::instrument(name = "resend_code", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn resend_code(
        &self,
        tenant: &Tenant,
        session_id: &str,
    ) -> Result<Started, AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let session_id = parse_uuid(session_id, "session_id")?;
        tracing::Span::current().record("session_id", session_id.as_str());
        let now = inner.clock.now_ms();
        let mut tx = inner.store.begin().await?;
        let Some(pending) = tx.lock_pending_session(&tenant.id, &session_id).await? else {
            return Err(AuthError::CodeInvalid);
        };
        // A login's proofs never outlive CODE_MAX_AGE from its start, and a
        // login from before resends existed (no recorded kind of email) is
        // not resent: start a new one.
        let end_of_life = pending.created_at + millis(policy.code_max_age);
        let Some(kind) = pending.mail_kind.as_deref().filter(|_| now < end_of_life) else {
            return Err(AuthError::CodeInvalid);
        };
        let counters = inner
            .limit_keys
            .for_send(&policy.limits, &pending.email, None, now);
        self.known_refusal(tenant, &counters, now)?;
        self.check_limits(&mut tx, tenant, &counters, now).await?;
        let (wants_code, wants_link) = match pending.method.as_str() {
            "link" => (false, true),
            "code_and_link" => (true, true),
            _ => (true, false),
        };
        // The URL must still be allowed (the allowlist may have changed).
        let validation_url = match pending.validation_url.as_deref() {
            Some(u) => Some(
                policy
                    .allowed_validation_urls
                    .check(u)
                    .map_err(AuthError::ValidationUrlNotAllowed)?,
            ),
            None => None,
        };
        let proofs = self.new_proofs(
            policy,
            &session_id,
            wants_code,
            wants_link,
            validation_url.as_ref(),
        );
        let expires_at = (now + millis(policy.code_ttl)).min(end_of_life);
        tx.replace_proofs(
            &tenant.id,
            &session_id,
            proofs.code_hash.as_ref().map(|h| h.as_slice()),
            proofs.link_hash.as_ref().map(|h| h.as_slice()),
            expires_at,
        )
        .await?;
        let locale = pending
            .locale
            .as_deref()
            .unwrap_or(policy.default_locale.as_str());
        self.queue_mail(
            &mut tx,
            tenant,
            &session_id,
            &pending.email,
            kind,
            proofs,
            locale,
            pending.created_at,
            now,
        )
        .await?;
        self.commit_mail(tx, tenant, kind, now).await?;
        tracing::info!("login email sent again");
        ::metrics::counter!(metrics::CODES_RESENT).increment(1);
        Ok(Started {
            session_id,
            expires_at,
            code_length: policy.code_length,
        })
    }

    /// Refuses a call from memory when a limit it would count against is
    /// known to be reached (no database work for a flood of refused calls).
    fn known_refusal(
        &self,
        tenant: &Tenant,
        counters: &[limits::Counter],
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        match self.inner.refusals.check(&tenant.id, counters, now) {
            Some((wait, limit)) => {
                metrics::count(metrics::RATE_LIMITED, "limit", limit);
                Err(AuthError::RateLimited(wait))
            }
            None => Ok(()),
        }
    }

    /// Counts a sign-in email against the tenant's ceiling and `counters`
    /// (in the caller's transaction), refusing it (RATE_LIMITED, with the
    /// time left in the window) when one is over its limit. A refused call
    /// is rolled back, so it counts nothing.
    async fn check_limits(
        &self,
        tx: &mut crate::store::Tx,
        tenant: &Tenant,
        counters: &[limits::Counter],
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        if let Err(wait) =
            inner
                .ceiling
                .check(&tenant.id, tenant.policy.limits.per_tenant_minute, now)
        {
            tracing::info!(limit = "tenant", "rate limited");
            metrics::count(metrics::RATE_LIMITED, "limit", "tenant");
            return Err(AuthError::RateLimited(wait));
        }
        let hits: Vec<crate::store::Hit<'_>> = counters
            .iter()
            .map(|c| crate::store::Hit {
                key: &c.key,
                window_start: c.window_start,
            })
            .collect();
        let counts = tx.hit(&tenant.id, &hits, now).await?;
        for counter in counters {
            let count = counts
                .iter()
                .find(|(k, _)| *k == counter.key)
                .map_or(0, |(_, n)| *n);
            if i64::from(count) > i64::from(counter.limit) {
                inner.refusals.remember(&tenant.id, counter, now);
                tracing::info!(limit = counter.kind(), "rate limited");
                metrics::count(metrics::RATE_LIMITED, "limit", counter.kind());
                return Err(AuthError::RateLimited(counter.retry_after(now)));
            }
        }
        Ok(())
    }

    /// Fresh proofs for a session: a code and/or a link.
    fn new_proofs(
        &self,
        policy: &Policy,
        session_id: &str,
        wants_code: bool,
        wants_link: bool,
        validation_url: Option<&url::Url>,
    ) -> Proofs {
        let code = wants_code.then(|| secrets::generate_code(policy.code_length));
        let code_hash = code.as_ref().map(|c| self.inner.codes.hash(session_id, c));
        let link_token = wants_link.then(secrets::LinkToken::generate);
        let link_hash = link_token.as_ref().map(|t| t.hash());
        let link = link_token
            .as_ref()
            .zip(validation_url)
            .map(|(t, url)| links::magic_link(url, t.as_str()));
        Proofs {
            code,
            code_hash,
            link,
            link_hash,
        }
    }

    /// Queues a session's email (sealed), in the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    async fn queue_mail(
        &self,
        tx: &mut crate::store::Tx,
        tenant: &Tenant,
        session_id: &str,
        email: &str,
        kind: &str,
        proofs: Proofs,
        locale: &str,
        started_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let mail_id = uuid::Uuid::now_v7().to_string();
        let signs_in = kind == mail::KIND_SIGN_IN;
        let payload = mail::seal_payload(
            &inner.kek,
            &mail_id,
            &SignInPayload {
                // Only a sign-in email carries the proofs.
                code: proofs.code.filter(|_| signs_in),
                link: proofs.link.filter(|_| signs_in),
                expires_at: (now + millis(policy.code_ttl))
                    .min(started_at + millis(policy.code_max_age)),
                extend_until: started_at + millis(policy.code_max_age),
                locale: locale.to_owned(),
            },
        );
        tx.enqueue_mail(&NewMail {
            id: &mail_id,
            tenant_id: &tenant.id,
            session_id: Some(session_id),
            kind,
            recipient: email,
            // Every kind goes the same way through the outbox (a suppressed
            // one is accepted without being sent), so its proof's expiry
            // moves by the same rule at the same moment as a real email's.
            payload_sealed: Some(payload.as_slice()),
            created_at: now,
            deliver: true,
            notify: self.should_notify_replicas(now),
        })
        .await?;
        Ok(())
    }

    /// Commits a transaction that queued a login's email (see
    /// [`Self::queue_mail`]), then counts it against the tenant's ceiling,
    /// wakes the local outbox worker and counts it as queued.
    async fn commit_mail(
        &self,
        tx: crate::store::Tx,
        tenant: &Tenant,
        kind: &str,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        tx.commit().await?;
        self.inner.ceiling.record(&tenant.id, now);
        self.inner.outbox_wake.notify_one();
        if kind != mail::KIND_SUPPRESSED {
            metrics::count(metrics::EMAILS, "event", "queued");
        }
        Ok(())
    }

    /// Verifies a code. Every attempt is counted before the code is compared,
    /// in the same transaction that (on success) activates the session,
    /// creates the user if needed and issues the first refresh token; so of
    /// any number of racing attempts with the right code exactly one wins.
    #[tracing::instrument(name = "verify", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn verify(&self, tenant: &Tenant, proof: VerifyProof) -> Result<Verified, AuthError> {
        let kind = if proof.link_token.trim().is_empty() {
            "code"
        } else {
            "link"
        };
        let mut expired = false;
        let result = match self.signing_keys_ready(tenant).await {
            Ok(()) => self.check_proof(tenant, proof, &mut expired).await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AuthError::CodeInvalid) if expired => "expired",
            Err(AuthError::CodeInvalid) => "invalid",
            Err(AuthError::TooManyAttempts) => "too_many_attempts",
            Err(AuthError::RateLimited(_)) => "rate_limited",
            Err(AuthError::InvalidArgument { .. }) => "bad_input",
            Err(_) => "error",
        };
        ::metrics::counter!(metrics::VERIFICATIONS, "proof" => kind, "result" => outcome)
            .increment(1);
        result
    }

    /// [`Self::verify`] without the metrics; sets `expired` when a code is
    /// refused because its time is up (the caller is told CODE_INVALID all
    /// the same).
    async fn check_proof(
        &self,
        tenant: &Tenant,
        proof: VerifyProof,
        expired: &mut bool,
    ) -> Result<Verified, AuthError> {
        let has_code = !proof.code.trim().is_empty();
        let has_link = !proof.link_token.trim().is_empty();
        if has_code && has_link {
            return Err(AuthError::invalid(
                "link_token",
                "give either code (with session_id) or link_token, not both",
            ));
        }
        if has_link {
            return self.verify_link(tenant, &proof).await;
        }
        let inner = &self.inner;
        let policy = &tenant.policy;
        let session_id = parse_uuid(&proof.session_id, "session_id")?;
        tracing::Span::current().record("session_id", session_id.as_str());
        let code = secrets::parse_code(&proof.code)?;

        let now = inner.clock.now_ms();
        let max_attempts = i32::try_from(policy.code_max_attempts).unwrap_or(i32::MAX);
        let mut tx = inner.store.begin().await?;
        let Some(attempt) = tx
            .take_code_attempt(&tenant.id, &session_id, now, max_attempts)
            .await?
        else {
            // Nothing was counted; say why only when the session was ended
            // by its own attempt limit (not an oracle for the code).
            let status = tx.session_status(&tenant.id, &session_id).await?;
            *expired = status
                .as_ref()
                .is_some_and(|s| s.state == "pending" && s.proof_expires_at <= now);
            return match status {
                Some(s)
                    if s.end_reason.as_deref() == Some(SessionEnd::TooManyAttempts.as_str()) =>
                {
                    Err(AuthError::TooManyAttempts)
                }
                _ => Err(AuthError::CodeInvalid),
            };
        };

        // The address's budget of wrong codes (across all its sessions and
        // resends). Once spent, an attempt waits out an exponential backoff,
        // except the first attempt on a session: whoever holds a fresh email
        // can always try its code once (see "Attempt budgets" in the README).
        let failures = inner
            .limit_keys
            .for_failures(&policy.limits, &attempt.email, now);
        if let Some(counter) = &failures
            && attempt.attempts > 1
            && let Some((count, last_at)) = tx
                .lock_counter(&tenant.id, &counter.key, counter.window_start)
                .await?
        {
            let wait = limits::backoff(
                u32::try_from(count).unwrap_or(0),
                counter.limit,
                policy.limits.backoff_max,
            );
            let open_at = last_at + millis(wait);
            if now < open_at {
                // Rolled back: this attempt is not counted anywhere.
                tracing::info!("verification backing off: wrong-code budget spent");
                metrics::count(metrics::RATE_LIMITED, "limit", "wrong_codes");
                return Err(AuthError::RateLimited(Duration::from_millis(
                    u64::try_from(open_at - now).unwrap_or(1),
                )));
            }
        }

        if !inner.codes.matches(&session_id, code, &attempt.code_hash) {
            if let Some(counter) = &failures {
                let hit = crate::store::Hit {
                    key: &counter.key,
                    window_start: counter.window_start,
                };
                tx.hit(&tenant.id, &[hit], now).await?;
            }
            if attempt.attempts >= max_attempts {
                tx.end_session(&tenant.id, &session_id, SessionEnd::TooManyAttempts, now)
                    .await?;
                tx.commit().await?;
                tracing::info!("login ended after too many wrong codes");
                return Err(AuthError::TooManyAttempts);
            }
            tx.commit().await?;
            tracing::info!(attempts = attempt.attempts, "wrong code");
            return Err(AuthError::CodeInvalid);
        }
        self.complete_login(tx, tenant, session_id, &attempt.email, now)
            .await
    }

    /// Verifies a magic link's token: single use like a code, and it ends
    /// the session's code too (whichever proof is used first wins).
    async fn verify_link(
        &self,
        tenant: &Tenant,
        proof: &VerifyProof,
    ) -> Result<Verified, AuthError> {
        let inner = &self.inner;
        let token = secrets::LinkToken::parse(&proof.link_token, "link_token")?;
        let expected_session = match proof.session_id.trim() {
            "" => None,
            given => Some(parse_uuid(given, "session_id")?),
        };
        let now = inner.clock.now_ms();
        let mut tx = inner.store.begin().await?;
        let Some(found) = tx.take_link(&tenant.id, &token.hash(), now).await? else {
            return Err(AuthError::CodeInvalid);
        };
        if expected_session.is_some_and(|s| s != found.session_id) {
            return Err(AuthError::CodeInvalid);
        }
        tracing::Span::current().record("session_id", found.session_id.as_str());
        self.complete_login(tx, tenant, found.session_id, &found.email, now)
            .await
    }

    /// The end of a successful verification, in the transaction that checked
    /// the proof: the user (created on first login when allowed), the
    /// session made active with its proofs wiped, the first refresh token.
    async fn complete_login(
        &self,
        mut tx: crate::store::Tx,
        tenant: &Tenant,
        session_id: String,
        email: &str,
        now: UnixMillis,
    ) -> Result<Verified, AuthError> {
        let policy = &tenant.policy;
        let (user, new_user) = match policy.signup_policy {
            SignupPolicy::LoginOrCreate => {
                let new_id = uuid::Uuid::now_v7().to_string();
                tx.find_or_create_user(&tenant.id, email, &new_id, now)
                    .await?
            }
            // (A proof for an unknown address was never sent; even a lucky
            // guess must not create an account.)
            SignupPolicy::LoginOnly => match tx.find_user(&tenant.id, email).await? {
                Some(user) => (user, false),
                None => {
                    tx.commit().await?;
                    return Err(AuthError::CodeInvalid);
                }
            },
        };
        let session_expires_at = now + millis(policy.session_ttl);
        if !tx
            .activate_session(&tenant.id, &session_id, &user.id, now, session_expires_at)
            .await?
        {
            // Unreachable while the proof's row lock is held; be safe anyway.
            return Err(AuthError::CodeInvalid);
        }
        let refresh_token = RefreshToken::generate();
        tx.insert_refresh_token(&tenant.id, &session_id, &refresh_token.hash(), now)
            .await?;
        let (access_token, expires_in) = self.sign_access_token(
            tenant,
            &user.id,
            &user.email,
            &session_id,
            now,
            session_expires_at,
        )?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, new_user, "login verified");

        Ok(Verified {
            tokens: Tokens {
                access_token,
                expires_in,
                refresh_token,
            },
            user: User {
                id: user.id,
                email: user.email,
                created_at: user.created_at,
            },
            session_id,
            new_user,
        })
    }

    /// Rotates a refresh token: the presented one is marked used and a
    /// successor is issued, in one transaction. A used token presented again
    /// inside the grace window gets the same successor (nothing new is
    /// minted); after it, the whole session ends.
    #[tracing::instrument(name = "refresh", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn refresh(&self, tenant: &Tenant, refresh_token: &str) -> Result<Tokens, AuthError> {
        let mut retried = false;
        let result = match self.signing_keys_ready(tenant).await {
            Ok(()) => self.rotate(tenant, refresh_token, &mut retried).await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) if retried => "retried",
            Ok(_) => "ok",
            Err(AuthError::RefreshTokenInvalid) => "invalid",
            Err(AuthError::RefreshTokenReused) => "reused",
            Err(AuthError::InvalidArgument { .. }) => "bad_input",
            Err(_) => "error",
        };
        metrics::count(metrics::REFRESHES, "result", outcome);
        result
    }

    /// [`Self::refresh`] without the metrics; sets `retried` when the answer
    /// is the successor already issued (a retry inside the grace window).
    async fn rotate(
        &self,
        tenant: &Tenant,
        refresh_token: &str,
        retried: &mut bool,
    ) -> Result<Tokens, AuthError> {
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
                // Ended or expired session: roll back, the token stays as it was.
                return Err(AuthError::RefreshTokenInvalid);
            };
            tx.insert_refresh_token(&tenant.id, &session_id, &successor.hash(), now)
                .await?;
            let (access_token, expires_in) = self.sign_access_token(
                tenant,
                &session.user_id,
                &session.email,
                &session_id,
                now,
                session.expires_at,
            )?;
            tx.commit().await?;
            return Ok(Tokens {
                access_token,
                expires_in,
                refresh_token: successor,
            });
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
        let (Some(rotated_at), Some(user_id), Some(expires_at)) =
            (used.rotated_at, used.user_id, used.expires_at)
        else {
            return Err(AuthError::RefreshTokenInvalid);
        };
        if used.state != "active" || expires_at <= now {
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
                &user_id,
                &used.email,
                &used.session_id,
                now,
                expires_at,
            )?;
            tracing::info!("refresh token retried within the grace window");
            *retried = true;
            return Ok(Tokens {
                access_token,
                expires_in,
                refresh_token: successor,
            });
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
        refresh_token: &str,
        session_id: &str,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        let token = if refresh_token.trim().is_empty() {
            None
        } else {
            Some(RefreshToken::parse(refresh_token, "refresh_token")?)
        };
        let session_id = if session_id.trim().is_empty() {
            None
        } else {
            Some(parse_uuid(session_id, "session_id")?)
        };
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

    /// Keeps this process's copies of tenants and API keys current: polls
    /// the change counters every `interval` and reloads what changed, and
    /// writes the gathered "last used" times every `flush_every` (and on
    /// stop).
    pub async fn sync_periodically(
        self,
        interval: Duration,
        flush_every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let inner = &self.inner;
        // Nothing seen yet: the first tick reloads both, closing the window
        // between the initial load and this task's start. (Counters are read
        // before reloading, so a change during a reload shows next tick.)
        let mut seen: Vec<(String, i64)> = Vec::new();
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            // Each step is bounded: a hung connection must not keep a
            // revoked key alive (keys go UNAVAILABLE once the copy is stale).
            let step = async {
                let now = inner.store.change_counters().await?;
                let changed = |name: &str| {
                    now.iter().find(|c| c.0 == name) != seen.iter().find(|c| c.0 == name)
                };
                if changed("tenants") {
                    inner.tenants.reload().await?;
                    // A new tenant's keys are ready before its first login.
                    for tenant in inner.tenants.all() {
                        inner
                            .keys
                            .ring(&tenant.id)
                            .await
                            .map_err(AuthError::Internal)?;
                    }
                }
                if changed("api_keys") {
                    inner.api_keys.reload().await?;
                } else {
                    // Nothing changed since the last reload: still current.
                    inner.api_keys.confirm_current();
                }
                Ok::<_, AuthError>(now)
            };
            match tokio::time::timeout(interval.max(Duration::from_secs(1)) * 2, step).await {
                Ok(Ok(now)) => {
                    seen = now;
                    crate::telemetry::DATABASE.worked();
                }
                Ok(Err(e)) => crate::telemetry::DATABASE.failed(&format!(
                    "syncing tenants and keys failed: {}",
                    e.cause_chain()
                )),
                Err(_) => crate::telemetry::DATABASE.failed(&"syncing tenants and keys timed out"),
            }
            let bound = interval.max(Duration::from_secs(1)) * 2;
            if tokio::time::timeout(bound, self.share_tenant_counts())
                .await
                .is_err()
            {
                tracing::warn!("sharing tenant counts timed out");
            }
            if last_flush.elapsed() >= flush_every {
                last_flush = tokio::time::Instant::now();
                if let Err(e) = inner.api_keys.flush_last_used().await {
                    tracing::warn!(error = %e.cause_chain(), "recording API key use failed");
                }
            }
        }
        if let Err(e) = inner.api_keys.flush_last_used().await {
            tracing::warn!(error = %e.cause_chain(), "recording API key use failed");
        }
        self.share_tenant_counts().await;
    }

    /// Adds this replica's sign-in emails of the minute to each tenant's
    /// shared count and reads back every replica's total (the tenant
    /// ceiling). One statement per tenant served this minute.
    async fn share_tenant_counts(&self) {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        for flush in inner.ceiling.take(now) {
            let total = inner
                .store
                .add_to_counter(
                    &flush.tenant_id,
                    limits::TENANT_KEY,
                    flush.window_start,
                    i32::try_from(flush.count).unwrap_or(i32::MAX),
                    now,
                )
                .await;
            if let Err(e) = &total {
                tracing::warn!(error = %e, "sharing a tenant's count failed");
            }
            inner.ceiling.settle(&flush, total.ok());
        }
    }

    /// Deletes rate-limit counters whose window has ended and expired
    /// idempotency keys, every `interval`. Any replica may do it (deletes
    /// are idempotent); the limits never read a row this removes.
    pub async fn purge_periodically(
        self,
        longest_window: Duration,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let inner = &self.inner;
        let keep = millis(longest_window.max(limits::FAILURE_WINDOW));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = inner.clock.now_ms();
            match inner.store.purge_limits(now - keep, now).await {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::debug!(rows, "purged old rate-limit counters and idempotency keys")
                }
                Err(e) => tracing::warn!(error = %e, "purging rate-limit counters failed"),
            }
        }
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
    async fn signing_keys_ready(&self, tenant: &Tenant) -> Result<(), AuthError> {
        self.inner
            .keys
            .ring(&tenant.id)
            .await
            .map(|_| ())
            .map_err(AuthError::Internal)
    }

    /// Signs an access token for a session, never outliving the session.
    fn sign_access_token(
        &self,
        tenant: &Tenant,
        user_id: &str,
        email: &str,
        session_id: &str,
        now: UnixMillis,
        session_expires_at: UnixMillis,
    ) -> Result<(String, i32), AuthError> {
        let policy = &tenant.policy;
        let iat = now / 1000;
        let exp = ((now + millis(policy.access_token_ttl)).min(session_expires_at)) / 1000;
        let claims = AccessClaims {
            iss: &policy.issuer,
            aud: &policy.audience,
            sub: user_id,
            email,
            sid: session_id,
            tid: &tenant.id,
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::now_v7().to_string(),
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

fn parse_uuid(text: &str, field: &'static str) -> Result<String, AuthError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AuthError::invalid(field, "is required"));
    }
    // Session and user ids are hyphenated UUIDs (any case); compare them
    // canonically.
    uuid::Uuid::try_parse(text)
        .ok()
        .filter(|_| text.len() == 36)
        .map(|id| id.to_string())
        .ok_or_else(|| AuthError::invalid(field, "is not a valid id (a UUID)"))
}

fn parse_idempotency_key(text: &str) -> Result<Option<&str>, AuthError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::invalid(
            "idempotency_key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(text))
}

/// SHA-256 over length-prefixed parts (no two requests share one).
fn request_fingerprint(parts: &[&str]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

fn parse_client_ip(text: &str) -> Result<Option<IpAddr>, AuthError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<IpAddr>()
        .map(Some)
        .map_err(|_| AuthError::invalid("client.ip", "must be an IPv4 or IPv6 address"))
}

fn parse_user_agent(text: &str) -> Result<Option<&str>, AuthError> {
    if text.chars().count() > MAX_USER_AGENT_LEN {
        return Err(AuthError::invalid(
            "client.user_agent",
            "must be at most 512 characters",
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "client.user_agent",
            "must not contain control characters",
        ));
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_must_be_uuids_and_are_canonicalised() {
        let id = uuid::Uuid::now_v7();
        let upper = id.to_string().to_uppercase();
        assert_eq!(parse_uuid(&upper, "session_id").unwrap(), id.to_string());
        let simple = id.simple().to_string();
        for bad in ["", "abc", "'; DROP TABLE users; --", simple.as_str()] {
            assert_eq!(
                parse_uuid(bad, "session_id").unwrap_err().field(),
                Some("session_id")
            );
        }
    }

    #[test]
    fn client_ip_is_optional_but_must_be_an_address() {
        assert_eq!(parse_client_ip("").unwrap(), None);
        assert_eq!(
            parse_client_ip(" ::1 ").unwrap(),
            Some(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(
            parse_client_ip("203.0.113.9").unwrap(),
            Some(IpAddr::from([203, 0, 113, 9]))
        );
        assert!(parse_client_ip("example.com").is_err());
    }

    #[test]
    fn user_agent_is_limited_in_length_and_characters() {
        assert_eq!(parse_user_agent("").unwrap(), None);
        assert!(parse_user_agent(&"x".repeat(512)).is_ok());
        assert!(parse_user_agent(&"x".repeat(513)).is_err());
        assert!(parse_user_agent("evil\nheader").is_err());
    }
}
