//! Verify: a code or a magic link proves the address; the session
//! becomes active and the user is found or created.

use std::time::Duration;

use super::{
    AuthService, Tokens, User, Verified, VerifyProof,
    input::parse_uuid,
    limits, secrets,
    secrets::RefreshToken,
    tenants::{SignupPolicy, Tenant},
    tokens::Subject,
};
use crate::{
    clock::{UnixMillis, millis},
    error::AuthError,
    metrics,
    store::{SessionEnd, SessionStage},
};

/// Why a proof was refused, finer than the caller is told: an expired code
/// is CODE_INVALID to the caller (no oracle), "expired" in the metrics.
enum Refusal {
    Expired,
    Other(AuthError),
}

impl<E: Into<AuthError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

impl Refusal {
    fn into_error(self) -> AuthError {
        match self {
            Self::Expired => AuthError::CodeInvalid,
            Self::Other(e) => e,
        }
    }
}

impl AuthService {
    /// Verifies a code. Every attempt is counted before the code is compared,
    /// in the same transaction that (on success) activates the session,
    /// creates the user if needed and issues the first refresh token; so of
    /// any number of racing attempts with the right code exactly one wins.
    #[tracing::instrument(name = "verify", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn verify(&self, tenant: &Tenant, proof: VerifyProof) -> Result<Verified, AuthError> {
        let kind = if proof.link_token.is_some() {
            "link"
        } else {
            "code"
        };
        let result = match self.signing_keys_ready(tenant).await {
            Ok(()) => self.check_proof(tenant, proof).await,
            Err(e) => Err(Refusal::Other(e)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Refusal::Expired) => "expired",
            Err(Refusal::Other(e)) => match e {
                AuthError::CodeInvalid => "invalid",
                AuthError::TooManyAttempts => "too_many_attempts",
                AuthError::UserDisabled => "user_disabled",
                AuthError::RateLimited(_) => "rate_limited",
                AuthError::InvalidArgument { .. } => "bad_input",
                _ => "error",
            },
        };
        ::metrics::counter!(metrics::VERIFICATIONS, "proof" => kind, "result" => outcome)
            .increment(1);
        result.map_err(Refusal::into_error)
    }

    /// [`Self::verify`] without the metrics.
    async fn check_proof(&self, tenant: &Tenant, proof: VerifyProof) -> Result<Verified, Refusal> {
        let code = match (proof.code.as_deref(), proof.link_token.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(AuthError::invalid(
                    "link_token",
                    "give either code (with session_id) or link_token, not both",
                )
                .into());
            }
            (None, Some(link)) => {
                let session_id = proof.session_id.as_deref();
                return Ok(self.verify_link(tenant, link, session_id).await?);
            }
            (code, None) => code,
        };
        let inner = &self.inner;
        let policy = &tenant.policy;
        // (A missing value gets each parser's "is required".)
        let session_id = parse_uuid(
            proof.session_id.as_deref().unwrap_or_default(),
            "session_id",
        )?;
        tracing::Span::current().record("session_id", session_id.as_str());
        let code = secrets::parse_code(code.unwrap_or_default())?;

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
            let expired = status
                .as_ref()
                .is_some_and(|s| s.state == SessionStage::Pending && s.proof_expires_at <= now);
            return Err(match status {
                Some(s) if s.end_reason == Some(SessionEnd::TooManyAttempts) => {
                    Refusal::Other(AuthError::TooManyAttempts)
                }
                // (Ended when the user was disabled: the caller already
                // holds this login of theirs.)
                Some(s) if s.end_reason == Some(SessionEnd::UserDisabled) => {
                    Refusal::Other(AuthError::UserDisabled)
                }
                _ if expired => Refusal::Expired,
                _ => Refusal::Other(AuthError::CodeInvalid),
            });
        };

        // The address's budget of wrong codes (across all its sessions and
        // resends). Once spent, an attempt waits out an exponential backoff,
        // except the first attempt on a session: whoever holds a fresh email
        // can always try its code once (see docs/abuse-protection.md, "Attempt
        // budgets that survive new codes").
        let failures = inner
            .limit_keys
            .for_failures(&policy.limits, &attempt.email, now);
        if let Some(counter) = &failures
            && attempt.attempts > 1
        {
            // Rolled back when refused: this attempt is not counted anywhere.
            self.failure_backoff(&mut tx, tenant, counter, now).await?;
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
                return Err(AuthError::TooManyAttempts.into());
            }
            tx.commit().await?;
            tracing::info!(attempts = attempt.attempts, "wrong code");
            return Err(AuthError::CodeInvalid.into());
        }
        Ok(self
            .complete_login(
                tx,
                tenant,
                session_id,
                &attempt.email,
                attempt.email_change_of.as_deref(),
                now,
            )
            .await?)
    }

    /// Refuses a Verify or a passkey login while the address's failure
    /// budget is spent and its backoff has not passed (the transaction is
    /// rolled back: nothing is counted).
    pub(super) async fn failure_backoff(
        &self,
        tx: &mut crate::store::Tx,
        tenant: &Tenant,
        counter: &limits::Counter,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        let Some((count, last_at)) = tx
            .lock_counter(&tenant.id, &counter.key, counter.window_start)
            .await?
        else {
            return Ok(());
        };
        let wait = limits::backoff(
            u32::try_from(count).unwrap_or(0),
            counter.limit,
            tenant.policy.limits.backoff_max,
        );
        let open_at = last_at + millis(wait);
        if now < open_at {
            tracing::info!("backing off: the address's failure budget is spent");
            metrics::count(metrics::RATE_LIMITED, "limit", "wrong_codes");
            return Err(AuthError::RateLimited(Duration::from_millis(
                u64::try_from(open_at - now).unwrap_or(1),
            )));
        }
        Ok(())
    }

    /// Verifies a magic link's token: single use like a code, and it ends
    /// the session's code too (whichever proof is used first wins).
    async fn verify_link(
        &self,
        tenant: &Tenant,
        link_token: &str,
        session_id: Option<&str>,
    ) -> Result<Verified, AuthError> {
        let inner = &self.inner;
        let token = secrets::LinkToken::parse(link_token, "link_token")?;
        let expected_session = session_id
            .map(|given| parse_uuid(given, "session_id"))
            .transpose()?;
        let now = inner.clock.now_ms();
        let mut tx = inner.store.begin().await?;
        let Some(found) = tx.take_link(&tenant.id, &token.hash(), now).await? else {
            return Err(AuthError::CodeInvalid);
        };
        if expected_session.is_some_and(|s| s != found.session_id) {
            return Err(AuthError::CodeInvalid);
        }
        tracing::Span::current().record("session_id", found.session_id.as_str());
        self.complete_login(
            tx,
            tenant,
            found.session_id,
            &found.email,
            found.email_change_of.as_deref(),
            now,
        )
        .await
    }

    /// The end of a successful verification, in the transaction that checked
    /// the proof: the user (created on first login when allowed, or moved
    /// to this address by a change of address), the session made active
    /// with its proofs wiped, the first refresh token.
    async fn complete_login(
        &self,
        mut tx: crate::store::Tx,
        tenant: &Tenant,
        session_id: String,
        email: &str,
        email_change_of: Option<&str>,
        now: UnixMillis,
    ) -> Result<Verified, AuthError> {
        let policy = &tenant.policy;
        if let Some(user_id) = email_change_of {
            match self
                .change_email_in(&mut tx, tenant, user_id, email, now)
                .await
            {
                Ok(user) => {
                    let verified = self
                        .activate(tx, tenant, session_id, user, false, now)
                        .await?;
                    // (The notice to the old address.)
                    self.inner.outbox_wake.notify_one();
                    metrics::count(metrics::EMAILS, "event", "queued");
                    return Ok(verified);
                }
                Err(refused) => {
                    if let Some(reason) = refused.end {
                        tx.end_session(&tenant.id, &session_id, reason, now).await?;
                        tx.commit().await?;
                    }
                    return Err(refused.error);
                }
            }
        }
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
        if user.disabled_at.is_some() {
            // The proof is used up all the same.
            tx.end_session(&tenant.id, &session_id, SessionEnd::UserDisabled, now)
                .await?;
            tx.commit().await?;
            tracing::info!(user_id = %user.id, "login refused: user disabled");
            return Err(AuthError::UserDisabled);
        }
        self.activate(tx, tenant, session_id, user, new_user, now)
            .await
    }

    /// Makes the verified login an active session of `user`, issues its
    /// first tokens and commits.
    async fn activate(
        &self,
        mut tx: crate::store::Tx,
        tenant: &Tenant,
        session_id: String,
        user: crate::store::UserRow,
        new_user: bool,
        now: UnixMillis,
    ) -> Result<Verified, AuthError> {
        let policy = &tenant.policy;
        let session_expires_at = now + millis(policy.session_ttl);
        if !tx
            .activate_session(&tenant.id, &session_id, &user.id, now, session_expires_at)
            .await?
        {
            // Unreachable while the proof's row lock is held; be safe anyway.
            return Err(AuthError::CodeInvalid);
        }
        self.issue_tokens(
            tx,
            tenant,
            session_id,
            user,
            new_user,
            now,
            session_expires_at,
        )
        .await
    }

    /// The end of every login, in the transaction that proved it (a code, a
    /// link, a passkey): the session's first refresh token and access token,
    /// then the commit.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn issue_tokens(
        &self,
        mut tx: crate::store::Tx,
        tenant: &Tenant,
        session_id: String,
        user: crate::store::UserRow,
        new_user: bool,
        now: UnixMillis,
        session_expires_at: UnixMillis,
    ) -> Result<Verified, AuthError> {
        let refresh_token = RefreshToken::generate();
        tx.insert_refresh_token(&tenant.id, &session_id, &refresh_token.hash(), now)
            .await?;
        let (access_token, expires_in) = self.sign_access_token(
            tenant,
            Subject {
                user_id: &user.id,
                email: &user.email,
                app_metadata: Some(&user.app_metadata),
            },
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
            user: User::from(user),
            session_id,
            new_user,
        })
    }
}
