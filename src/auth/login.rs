//! Starting a login: StartAuth and ResendCode, their limits, and the
//! email each queues in the same transaction.

use std::time::Duration;

use super::{
    AuthService, MAX_URL_LEN, Method, Policy, StartAuth, Started,
    email::EmailAddress,
    input::{
        parse_client_ip, parse_idempotency_key, parse_user_agent, parse_uuid, request_fingerprint,
    },
    limits, links,
    payload::{self, SignInPayload},
    secrets,
    tenants::{SignupPolicy, Tenant},
};
use crate::{
    clock::{UnixMillis, millis},
    error::AuthError,
    metrics,
    store::{MailKind, NewIdempotencyKey, NewMail, NewSession},
};

/// A session's new proofs: the secrets (for the email) and their hashes
/// (for the database).
struct Proofs {
    code: Option<String>,
    code_hash: Option<[u8; 32]>,
    link: Option<String>,
    link_hash: Option<[u8; 32]>,
}

/// How long an idempotency key answers with its first result.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

impl AuthService {
    /// Starts a login: one transaction writes the pending session and the
    /// email carrying its code; the worker is woken to send it.
    #[tracing::instrument(name = "start_auth", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn start_auth(&self, tenant: &Tenant, req: StartAuth) -> Result<Started, AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let email = match &req.email_change_of {
            // (The request's field is `new_email`.)
            Some(_) => EmailAddress::parse(&req.email).map_err(|e| match e {
                AuthError::InvalidArgument { reason, .. } => {
                    AuthError::invalid("new_email", reason)
                }
                other => other,
            })?,
            None => EmailAddress::parse(&req.email)?,
        };
        if req
            .validation_url
            .as_ref()
            .is_some_and(|u| u.len() > MAX_URL_LEN)
        {
            return Err(AuthError::invalid(
                "validation_url",
                "must be at most 2048 characters",
            ));
        }
        let client_ip = parse_client_ip(req.client.ip.as_deref())?;
        let user_agent = parse_user_agent(req.client.user_agent.as_deref())?;
        let locale = match req.locale.as_deref().map(str::trim) {
            Some(given) if !links::is_locale(given) => {
                return Err(AuthError::invalid(
                    "locale",
                    "must be a language tag like `en` or `pt-BR`",
                ));
            }
            Some(given) => given,
            None => policy.default_locale.as_str(),
        };
        // The request's validation URL, else the tenant's default; a given
        // one must be allowed even when only a code is sent.
        let validation_url = match req.validation_url.as_deref().map(str::trim) {
            None => policy.default_validation_url.as_deref(),
            given => given,
        };
        let validation_url = allowed_url(policy, validation_url)?;
        let method = req.method.unwrap_or(if validation_url.is_some() {
            Method::CodeAndLink
        } else {
            Method::Code
        });
        if method == Method::Passkey {
            return Err(AuthError::invalid("method", "unknown method"));
        }
        let (wants_code, wants_link) = proofs_of(method);
        if wants_link && validation_url.is_none() {
            return Err(AuthError::invalid(
                "validation_url",
                "is required for a magic link (no default is configured)",
            ));
        }

        let idempotency_key = parse_idempotency_key(req.idempotency_key.as_deref())?;
        let email_change_of = match req.email_change_of.as_deref() {
            Some(user_id) => Some(
                self.email_change_target(tenant, user_id, email.as_str())
                    .await?,
            ),
            None => None,
        };
        // What makes a retry "the same request".
        let fingerprint = request_fingerprint(&[
            email.as_str(),
            method.as_str(),
            validation_url.as_ref().map_or("", |u| u.as_str()),
            locale,
            email_change_of.as_deref().unwrap_or(""),
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
            _ if email_change_of.is_some() => MailKind::SignIn,
            SignupPolicy::LoginOrCreate => MailKind::SignIn,
            SignupPolicy::LoginOnly => {
                if tx.user_exists(&tenant.id, email.as_str()).await? {
                    MailKind::SignIn
                } else if policy.notify_unknown_address {
                    MailKind::NoAccount
                } else {
                    MailKind::Suppressed
                }
            }
        };
        // A disabled user's address: the same again, its email suppressed.
        let kind = tx
            .insert_session(&NewSession {
                id: &session_id,
                tenant_id: &tenant.id,
                email: email.as_str(),
                method,
                code_hash: proofs.code_hash.as_ref().map(|h| h.as_slice()),
                link_hash: proofs.link_hash.as_ref().map(|h| h.as_slice()),
                proof_expires_at: expires_at,
                client_ip: client_ip.map(|ip| ip.to_string()).as_deref(),
                user_agent,
                created_at: now,
                validation_url: validation_url.as_ref().map(|u| u.as_str()),
                locale,
                mail_kind: kind,
                email_change_of: email_change_of.as_deref(),
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
        let Some(kind) = pending.mail_kind.filter(|_| now < end_of_life) else {
            return Err(AuthError::CodeInvalid);
        };
        let counters = inner
            .limit_keys
            .for_send(&policy.limits, &pending.email, None, now);
        self.known_refusal(tenant, &counters, now)?;
        self.check_limits(&mut tx, tenant, &counters, now).await?;
        let (wants_code, wants_link) = proofs_of(pending.method);
        // The URL must still be allowed (the allowlist may have changed).
        let validation_url = allowed_url(policy, pending.validation_url.as_deref())?;
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
        kind: MailKind,
        proofs: Proofs,
        locale: &str,
        started_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let mail_id = uuid::Uuid::now_v7().to_string();
        let signs_in = kind == MailKind::SignIn;
        let payload = payload::seal(
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
                new_email: None,
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
        kind: MailKind,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        tx.commit().await?;
        self.inner.ceiling.record(&tenant.id, now);
        self.inner.outbox_wake.notify_one();
        if kind != MailKind::Suppressed {
            metrics::count(metrics::EMAILS, "event", "queued");
        }
        Ok(())
    }
}

/// Which proofs a method sends: (a code, a link).
fn proofs_of(method: Method) -> (bool, bool) {
    match method {
        Method::Code => (true, false),
        Method::Link => (false, true),
        Method::CodeAndLink => (true, true),
        // (Refused before: a passkey session is never started by email.)
        Method::Passkey => (false, false),
    }
}

/// A validation URL, checked against the tenant's allowlist.
fn allowed_url(policy: &Policy, url: Option<&str>) -> Result<Option<url::Url>, AuthError> {
    url.map(|u| {
        policy
            .allowed_validation_urls
            .check(u)
            .map_err(AuthError::ValidationUrlNotAllowed)
    })
    .transpose()
}
