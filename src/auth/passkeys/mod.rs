//! Passkeys (WebAuthn): a signed-in user adds passkeys, and later signs in
//! with one alone. The relying-party work (challenges, signatures, origins,
//! counters) is webauthn-rs's; this module keeps its ceremony state in the
//! database between Start and Finish (so they may hit different replicas),
//! claims each ceremony once, and turns a verified login into a session
//! exactly as Verify does.
//!
//! A ceremony lasts [`CEREMONY_TTL`] on the service clock and belongs to
//! its tenant: another tenant's ceremony is unknown.

mod login;
mod relying_party;

pub use login::PasskeyAssertion;
pub use relying_party::{CEREMONY_TTL, PasskeyPolicy, check_origins, check_rp_id};

use webauthn_rs::prelude::{
    AuthenticatorAttachment, Credential, PasskeyRegistration, RegisterPublicKeyCredential, Uuid,
};

use super::{AuthService, input::parse_uuid, tenants::Tenant, tokens::AccessClaims};
use crate::{
    clock::{UnixMillis, millis},
    error::AuthError,
    metrics,
    store::{CeremonyKind, NewCeremony, NewPasskey, PasskeyRow},
};

/// Longest credential JSON a Finish reads (real ones are a few KiB).
pub const MAX_CREDENTIAL_JSON_LEN: usize = 32 * 1024;
/// Longest passkey name.
const MAX_NAME_CHARS: usize = 100;
/// Most passkeys one user may have.
pub const MAX_PASSKEYS_PER_USER: usize = 20;

/// A started ceremony: what the browser needs, and how to finish it.
#[derive(Clone, Debug)]
pub struct CeremonyStarted {
    pub ceremony_id: String,
    /// `{"publicKey": {...}}` for `navigator.credentials.create()` / `get()`.
    pub options_json: String,
    pub expires_at: UnixMillis,
}

/// A user's passkey, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub credential_id: Vec<u8>,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub counter_regressed_at: Option<UnixMillis>,
}

impl From<PasskeyRow> for PasskeyInfo {
    fn from(r: PasskeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            credential_id: r.credential_id,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            backup_eligible: r.backup_eligible,
            backup_state: r.backup_state,
            counter_regressed_at: r.counter_regressed_at,
        }
    }
}

/// A FinishPasskeyRegistration request.
#[derive(Clone)]
pub struct NewPasskeyRequest {
    pub access_token: String,
    pub ceremony_id: String,
    pub credential_json: String,
    pub name: Option<String>,
}

/// The WebAuthn JSON a browser sent (`credential.toJSON()`), parsed.
fn parse_credential<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, AuthError> {
    if json.trim().is_empty() {
        return Err(AuthError::invalid("credential_json", "is required"));
    }
    if json.len() > MAX_CREDENTIAL_JSON_LEN {
        return Err(AuthError::invalid("credential_json", "is too long"));
    }
    serde_json::from_str(json).map_err(|e| {
        AuthError::invalid(
            "credential_json",
            format!("is not a WebAuthn credential in JSON: {e}"),
        )
    })
}

/// A passkey's name: 1 to 100 characters, no control characters.
fn parse_name(name: Option<&str>) -> Result<String, AuthError> {
    let Some(name) = name.map(str::trim) else {
        return Ok("Passkey".to_owned());
    };
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AuthError::invalid(
            "name",
            "must be 1 to 100 characters, no control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A user id as WebAuthn's user handle (our ids are UUIDs).
fn user_handle(user_id: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(user_id)
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("a user id that is not a UUID: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> Result<String, AuthError> {
    serde_json::to_string(value).map_err(|e| AuthError::Internal(e.into()))
}

fn from_stored<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, AuthError> {
    serde_json::from_str(json)
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("unreadable stored passkey data: {e}")))
}

/// Counts a ceremony's outcome (`latchkey_passkey_ceremonies_total`).
fn count(ceremony: &'static str, result: &Result<impl Sized, AuthError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(AuthError::PasskeyInvalid) => "invalid",
        Err(AuthError::PasskeyCeremonyInvalid) => "ceremony_invalid",
        Err(AuthError::PasskeyCounterRegressed) => "counter_regressed",
        Err(AuthError::AccessTokenInvalid) => "access_token_invalid",
        Err(AuthError::RateLimited(_)) => "rate_limited",
        Err(AuthError::PasskeysNotConfigured) => "not_configured",
        Err(AuthError::InvalidArgument { .. } | AuthError::AlreadyExists(_)) => "bad_input",
        Err(_) => "error",
    };
    ::metrics::counter!(metrics::PASSKEY_CEREMONIES, "ceremony" => ceremony, "result" => outcome)
        .increment(1);
}

impl AuthService {
    /// The claims of a valid access token of the tenant whose session is
    /// still active: the signed-in user a passkey call acts for.
    async fn signed_in(
        &self,
        tenant: &Tenant,
        access_token: &str,
    ) -> Result<AccessClaims<'static>, AuthError> {
        if access_token.trim().is_empty() {
            return Err(AuthError::invalid("access_token", "is required"));
        }
        if access_token.len() > super::sessions::MAX_TOKEN_LEN {
            return Err(AuthError::AccessTokenInvalid);
        }
        let found = self.introspect(tenant, access_token).await?;
        match found.claims {
            Some(claims) if found.active => Ok(claims),
            _ => Err(AuthError::AccessTokenInvalid),
        }
    }

    /// Stores a new ceremony and answers its options.
    async fn begin_ceremony(
        &self,
        tenant: &Tenant,
        kind: CeremonyKind,
        user_id: Option<&str>,
        state: &impl serde::Serialize,
        options: &impl serde::Serialize,
    ) -> Result<CeremonyStarted, AuthError> {
        let now = self.inner.clock.now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let expires_at = now + millis(CEREMONY_TTL);
        self.inner
            .store
            .insert_ceremony(&NewCeremony {
                id: &id,
                tenant_id: &tenant.id,
                kind,
                user_id,
                state: &to_json(state)?,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(CeremonyStarted {
            ceremony_id: id,
            options_json: to_json(options)?,
            expires_at,
        })
    }

    /// Starts adding a passkey to the user of `access_token`.
    #[tracing::instrument(name = "start_passkey_registration", skip_all, fields(tenant = %tenant.id))]
    pub async fn start_passkey_registration(
        &self,
        tenant: &Tenant,
        access_token: &str,
    ) -> Result<CeremonyStarted, AuthError> {
        let rp = tenant
            .policy
            .passkeys
            .relying_party(&tenant.policy.app_name)?;
        let user = self.signed_in(tenant, access_token).await?;
        let existing = self
            .inner
            .store
            .user_passkeys(&tenant.id, &user.sub)
            .await?;
        if existing.len() >= MAX_PASSKEYS_PER_USER {
            return Err(AuthError::invalid(
                "access_token",
                format!("the user has {MAX_PASSKEYS_PER_USER} passkeys, the most allowed"),
            ));
        }
        let exclude = existing.into_iter().map(|p| p.credential_id).collect();
        let (mut options, state) = rp
            .start_passkey_registration(
                user_handle(&user.sub)?,
                &user.email,
                &user.email,
                Some(exclude),
            )
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("starting a registration: {e}")))?;
        // A passkey must be discoverable: logins never name credentials (see
        // `login`). `residentKey` is what current browsers read; the older
        // `requireResidentKey` stays as webauthn-rs sets it.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
            // Platform and roaming authenticators alike.
            selection.authenticator_attachment = None::<AuthenticatorAttachment>;
        }
        self.begin_ceremony(
            tenant,
            CeremonyKind::Registration,
            Some(&user.sub),
            &state,
            &options,
        )
        .await
    }

    /// Finishes adding a passkey: the ceremony is claimed (whatever the
    /// outcome), the credential verified by webauthn-rs and stored, in one
    /// transaction.
    #[tracing::instrument(name = "finish_passkey_registration", skip_all, fields(tenant = %tenant.id))]
    pub async fn finish_passkey_registration(
        &self,
        tenant: &Tenant,
        req: NewPasskeyRequest,
    ) -> Result<PasskeyInfo, AuthError> {
        let result = self.register(tenant, req).await;
        count("registration", &result);
        result
    }

    async fn register(
        &self,
        tenant: &Tenant,
        req: NewPasskeyRequest,
    ) -> Result<PasskeyInfo, AuthError> {
        let rp = tenant
            .policy
            .passkeys
            .relying_party(&tenant.policy.app_name)?;
        let ceremony_id = parse_uuid(&req.ceremony_id, "ceremony_id")?;
        let credential: RegisterPublicKeyCredential = parse_credential(&req.credential_json)?;
        let name = parse_name(req.name.as_deref())?;
        let user = self.signed_in(tenant, &req.access_token).await?;

        let now = self.inner.clock.now_ms();
        let mut tx = self.inner.store.begin().await?;
        let Some(ceremony) = tx.take_ceremony(&tenant.id, &ceremony_id).await? else {
            return Err(AuthError::PasskeyCeremonyInvalid);
        };
        if ceremony.kind != CeremonyKind::Registration
            || ceremony.user_id.as_deref() != Some(user.sub.as_ref())
        {
            // Not this user's registration: leave it be (rolled back).
            return Err(AuthError::PasskeyCeremonyInvalid);
        }
        if ceremony.expires_at <= now {
            tx.commit().await?;
            return Err(AuthError::PasskeyCeremonyInvalid);
        }
        let state: PasskeyRegistration = from_stored(&ceremony.state)?;
        let passkey = match rp.finish_passkey_registration(&credential, &state) {
            Ok(passkey) => passkey,
            Err(e) => {
                // The ceremony is spent: a new attempt starts a new one.
                tx.commit().await?;
                tracing::info!(error = %e, "passkey registration refused");
                return Err(AuthError::PasskeyInvalid);
            }
        };
        let stored = Credential::from(passkey.clone());
        let id = uuid::Uuid::now_v7().to_string();
        let row = NewPasskey {
            id: &id,
            tenant_id: &tenant.id,
            user_id: &user.sub,
            credential_id: passkey.cred_id(),
            credential: &to_json(&passkey)?,
            name: &name,
            sign_count: i64::from(stored.counter),
            backup_eligible: stored.backup_eligible,
            backup_state: stored.backup_state,
            created_at: now,
        };
        if !tx.insert_passkey(&row).await? {
            tx.commit().await?;
            return Err(AuthError::AlreadyExists(
                "this passkey is registered already".into(),
            ));
        }
        tx.commit().await?;
        tracing::info!(user_id = %user.sub, passkey_id = %id, "passkey registered");
        Ok(PasskeyInfo {
            id,
            name,
            credential_id: passkey.cred_id().clone(),
            created_at: now,
            last_used_at: None,
            backup_eligible: stored.backup_eligible,
            backup_state: stored.backup_state,
            counter_regressed_at: None,
        })
    }

    /// The passkeys of the user of `access_token`, oldest first.
    #[tracing::instrument(name = "list_passkeys", skip_all, fields(tenant = %tenant.id))]
    pub async fn list_passkeys(
        &self,
        tenant: &Tenant,
        access_token: &str,
    ) -> Result<Vec<PasskeyInfo>, AuthError> {
        let user = self.signed_in(tenant, access_token).await?;
        let rows = self
            .inner
            .store
            .user_passkeys(&tenant.id, &user.sub)
            .await?;
        Ok(rows.into_iter().map(PasskeyInfo::from).collect())
    }

    /// Deletes a passkey of the user of `access_token`.
    #[tracing::instrument(name = "delete_passkey", skip_all, fields(tenant = %tenant.id))]
    pub async fn delete_passkey(
        &self,
        tenant: &Tenant,
        access_token: &str,
        passkey_id: &str,
    ) -> Result<(), AuthError> {
        let passkey_id = parse_uuid(passkey_id, "passkey_id")?;
        let user = self.signed_in(tenant, access_token).await?;
        if !self
            .inner
            .store
            .delete_passkey(&tenant.id, &user.sub, &passkey_id)
            .await?
        {
            return Err(AuthError::PasskeyNotFound);
        }
        tracing::info!(user_id = %user.sub, %passkey_id, "passkey deleted");
        Ok(())
    }
}
