//! The passkey RPCs of [`Api`]: proto messages to domain calls and back
//! (the WebAuthn JSON travels as strings, untouched).

use std::sync::Arc;

use base64::Engine;

use super::{Api, given, timestamp, to_completion};
use crate::{
    auth::{
        self,
        passkeys::{CeremonyStarted, NewPasskeyRequest, PasskeyAssertion, PasskeyInfo},
        tenants::Tenant,
    },
    error::AuthError,
    proto,
};

fn passkey_to_proto(p: PasskeyInfo) -> proto::Passkey {
    proto::Passkey {
        id: p.id,
        name: p.name,
        credential_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&p.credential_id),
        created_at: Some(timestamp(p.created_at)),
        last_used_at: p.last_used_at.map(timestamp),
        backup_eligible: p.backup_eligible,
        backed_up: p.backup_state,
        counter_regressed_at: p.counter_regressed_at.map(timestamp),
    }
}

/// A started ceremony's three fields, in whichever response carries them.
macro_rules! started {
    ($message:path, $s:expr) => {{
        let s: CeremonyStarted = $s;
        $message {
            ceremony_id: s.ceremony_id,
            options_json: s.options_json,
            expires_at: Some(timestamp(s.expires_at)),
        }
    }};
}

impl Api {
    pub async fn start_passkey_registration(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::StartPasskeyRegistrationRequest,
    ) -> Result<proto::StartPasskeyRegistrationResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let started = to_completion(async move {
            auth.start_passkey_registration(&tenant, &req.access_token)
                .await
        })
        .await?;
        Ok(started!(proto::StartPasskeyRegistrationResponse, started))
    }

    pub async fn finish_passkey_registration(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::FinishPasskeyRegistrationRequest,
    ) -> Result<proto::FinishPasskeyRegistrationResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let passkey = to_completion(async move {
            auth.finish_passkey_registration(
                &tenant,
                NewPasskeyRequest {
                    access_token: req.access_token,
                    ceremony_id: req.ceremony_id,
                    credential_json: req.credential_json,
                    name: Some(req.name).filter(|n| !n.is_empty()),
                },
            )
            .await
        })
        .await?;
        Ok(proto::FinishPasskeyRegistrationResponse {
            passkey: Some(passkey_to_proto(passkey)),
        })
    }

    pub async fn start_passkey_login(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::StartPasskeyLoginRequest,
    ) -> Result<proto::StartPasskeyLoginResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let started = to_completion(async move {
            auth.start_passkey_login(&tenant, given(req.email).as_deref())
                .await
        })
        .await?;
        Ok(started!(proto::StartPasskeyLoginResponse, started))
    }

    pub async fn finish_passkey_login(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::FinishPasskeyLoginRequest,
    ) -> Result<proto::FinishPasskeyLoginResponse, AuthError> {
        let client = req.client.unwrap_or_default();
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        let verified = to_completion(async move {
            auth.finish_passkey_login(
                &tenant,
                PasskeyAssertion {
                    ceremony_id: req.ceremony_id,
                    credential_json: req.credential_json,
                    client: auth::ClientInfo {
                        ip: given(client.ip),
                        user_agent: Some(client.user_agent).filter(|ua| !ua.is_empty()),
                    },
                },
            )
            .await
        })
        .await?;
        let v = super::verified_to_proto(verified);
        Ok(proto::FinishPasskeyLoginResponse {
            token: v.token,
            token_type: v.token_type,
            expires_in: v.expires_in,
            refresh_token: v.refresh_token,
            user: v.user,
            session_id: v.session_id,
            new_user: v.new_user,
        })
    }

    pub async fn list_passkeys(
        &self,
        tenant: &Tenant,
        req: proto::ListPasskeysRequest,
    ) -> Result<proto::ListPasskeysResponse, AuthError> {
        let passkeys = self.auth.list_passkeys(tenant, &req.access_token).await?;
        Ok(proto::ListPasskeysResponse {
            passkeys: passkeys.into_iter().map(passkey_to_proto).collect(),
        })
    }

    pub async fn delete_passkey(
        &self,
        tenant: &Arc<Tenant>,
        req: proto::DeletePasskeyRequest,
    ) -> Result<proto::DeletePasskeyResponse, AuthError> {
        let (auth, tenant) = (self.auth.clone(), tenant.clone());
        to_completion(async move {
            auth.delete_passkey(&tenant, &req.access_token, &req.passkey_id)
                .await
        })
        .await?;
        Ok(proto::DeletePasskeyResponse {})
    }
}
