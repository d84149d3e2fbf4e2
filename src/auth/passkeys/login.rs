//! Signing in with a passkey. A login never names credentials: the options
//! are the same whether an email is given or not, and whatever the address
//! (no user enumeration). With an email, only that account's passkey can
//! finish the ceremony; an address without an account or without passkeys
//! gets a ceremony nothing can finish. The browser offers the passkeys it
//! holds for the site (discoverable credentials), and its answer names the
//! credential and its user.

use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PublicKeyCredential, WebauthnError,
};

use super::{CeremonyStarted, from_stored, parse_credential, to_json, user_handle};
use crate::{
    auth::{
        AuthService, ClientInfo, Verified,
        email::EmailAddress,
        input::{parse_client_ip, parse_user_agent, parse_uuid},
        tenants::Tenant,
    },
    clock::millis,
    error::AuthError,
    metrics,
    store::{CeremonyKind, Method, PasskeyUse, Tx},
};

/// A FinishPasskeyLogin request.
#[derive(Clone)]
pub struct PasskeyAssertion {
    pub ceremony_id: String,
    pub credential_json: String,
    pub client: ClientInfo,
}

impl AuthService {
    /// Starts a passkey login, for the account of `email` if given.
    #[tracing::instrument(name = "start_passkey_login", skip_all, fields(tenant = %tenant.id))]
    pub async fn start_passkey_login(
        &self,
        tenant: &Tenant,
        email: Option<&str>,
    ) -> Result<CeremonyStarted, AuthError> {
        let rp = tenant
            .policy
            .passkeys
            .relying_party(&tenant.policy.app_name)?;
        let user = match email {
            Some(email) => {
                let email = EmailAddress::parse(email)?;
                let found = self
                    .inner
                    .store
                    .user_by_email(&tenant.id, email.as_str())
                    .await?;
                Some(found.map(|u| u.id))
            }
            None => None,
        };
        let (mut options, state) = rp
            .start_discoverable_authentication()
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("starting a login: {e}")))?;
        // A plain modal request; the page may ask for autofill (conditional
        // mediation) itself.
        options.mediation = None;
        let (kind, user_id) = match &user {
            None => (CeremonyKind::Login, None),
            Some(user_id) => (CeremonyKind::AddressLogin, user_id.as_deref()),
        };
        self.begin_ceremony(tenant, kind, user_id, &state, &options)
            .await
    }

    /// Finishes a passkey login: the ceremony is claimed, the assertion
    /// verified by webauthn-rs against the stored passkey, its counter and
    /// backup flags updated, and a new active session issued its tokens,
    /// all in one transaction. The answer is a Verify's.
    #[tracing::instrument(name = "finish_passkey_login", skip_all, fields(tenant = %tenant.id, session_id))]
    pub async fn finish_passkey_login(
        &self,
        tenant: &Tenant,
        req: PasskeyAssertion,
    ) -> Result<Verified, AuthError> {
        let result = match self.signing_keys_ready(tenant).await {
            Ok(()) => self.check_assertion(tenant, req).await,
            Err(e) => Err(e),
        };
        super::count("login", &result);
        result
    }

    async fn check_assertion(
        &self,
        tenant: &Tenant,
        req: PasskeyAssertion,
    ) -> Result<Verified, AuthError> {
        let inner = &self.inner;
        let policy = &tenant.policy;
        let rp = policy.passkeys.relying_party(&policy.app_name)?;
        let ceremony_id = parse_uuid(&req.ceremony_id, "ceremony_id")?;
        let credential: PublicKeyCredential = parse_credential(&req.credential_json)?;
        let client_ip = parse_client_ip(req.client.ip.as_deref())?.map(|ip| ip.to_string());
        let user_agent = parse_user_agent(req.client.user_agent.as_deref())?;

        let now = inner.clock.now_ms();
        let mut tx = inner.store.begin().await?;
        let Some(ceremony) = tx.take_ceremony(&tenant.id, &ceremony_id).await? else {
            return Err(AuthError::PasskeyCeremonyInvalid);
        };
        if ceremony.kind == CeremonyKind::Registration || ceremony.expires_at <= now {
            // Spent either way (a registration's id at a login is a misuse).
            tx.commit().await?;
            return Err(AuthError::PasskeyCeremonyInvalid);
        }
        // Which passkey and user the browser answered for; from here on,
        // every refusal spends the ceremony.
        let Ok((handle, credential_id)) = rp.identify_discoverable_authentication(&credential)
        else {
            return refuse(tx, "the answer names no user").await;
        };
        let Some(stored) = tx.lock_passkey(&tenant.id, credential_id).await? else {
            return refuse(tx, "unknown credential").await;
        };
        let owner_matches = user_handle(&stored.user_id)? == handle
            && match ceremony.kind {
                CeremonyKind::AddressLogin => ceremony.user_id.as_deref() == Some(&stored.user_id),
                _ => true,
            };
        if !owner_matches {
            return refuse(tx, "the passkey is not the expected user's").await;
        }
        let Some(user) = tx.user_by_id(&tenant.id, &stored.user_id).await? else {
            return refuse(tx, "the passkey's user is gone").await;
        };
        if stored.counter_regressed_at.is_some() {
            tx.commit().await?;
            tracing::warn!(passkey_id = %stored.id, "a passkey marked after a counter regression was presented");
            return Err(AuthError::PasskeyCounterRegressed);
        }

        // The address's budget of failures, shared with wrong codes. Every
        // ceremony is free to start, so no attempt is exempt here.
        let failures = inner
            .limit_keys
            .for_failures(&policy.limits, &user.email, now);
        if let Some(counter) = &failures {
            self.failure_backoff(&mut tx, tenant, counter, now).await?;
        }

        let state: DiscoverableAuthentication = from_stored(&ceremony.state)?;
        let mut passkey: Passkey = from_stored(&stored.credential)?;
        let result = match rp.finish_discoverable_authentication_v2(&credential, state, &passkey) {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                tx.mark_counter_regressed(&tenant.id, &stored.id, now)
                    .await?;
                tx.commit().await?;
                tracing::warn!(
                    user_id = %user.id,
                    passkey_id = %stored.id,
                    "passkey signature counter went backwards (possible clone): refused and marked"
                );
                metrics::count(metrics::PASSKEY_COUNTER_REGRESSIONS, "action", "refused");
                return Err(AuthError::PasskeyCounterRegressed);
            }
            Err(e) => {
                if let Some(counter) = &failures {
                    let hit = crate::store::Hit {
                        key: &counter.key,
                        window_start: counter.window_start,
                    };
                    tx.hit(&tenant.id, &[hit], now).await?;
                }
                tx.commit().await?;
                tracing::info!(error = %e, passkey_id = %stored.id, "passkey assertion refused");
                return Err(AuthError::PasskeyInvalid);
            }
        };
        passkey.update_credential(&result);
        tx.record_passkey_use(
            &tenant.id,
            &stored.id,
            &PasskeyUse {
                credential: &to_json(&passkey)?,
                sign_count: i64::from(result.counter()),
                backup_eligible: result.backup_eligible(),
                backup_state: result.backup_state(),
                used_at: now,
            },
        )
        .await?;
        // Checked once the assertion proved the passkey, so that only its
        // holder learns it: as for Verify, the ceremony is spent.
        if user.disabled_at.is_some() {
            tx.commit().await?;
            tracing::info!(user_id = %user.id, "passkey login refused: user disabled");
            return Err(AuthError::UserDisabled);
        }

        let session_id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("session_id", session_id.as_str());
        let session_expires_at = now + millis(policy.session_ttl);
        tx.insert_active_session(
            &session_id,
            &tenant.id,
            &user,
            Method::Passkey,
            client_ip.as_deref(),
            user_agent,
            now,
            session_expires_at,
        )
        .await?;
        tracing::info!(passkey_id = %stored.id, "passkey login");
        self.issue_tokens(tx, tenant, session_id, user, false, now, session_expires_at)
            .await
    }
}

/// Refuses an assertion that names no passkey of the expected user: the
/// ceremony is spent (committed), nothing else changes.
async fn refuse<T>(tx: Tx, why: &'static str) -> Result<T, AuthError> {
    tx.commit().await?;
    tracing::info!(why, "passkey assertion refused");
    Err(AuthError::PasskeyInvalid)
}
