//! A passkey authenticator for the tests: webauthn-authenticator-rs's
//! software token (real keys, real signatures, a real signature counter),
//! driven the way a browser drives one, with the page's origin.

use latchkey::proto;
use webauthn_authenticator_rs::{prelude::*, softtoken::SoftToken};
use webauthn_rs_proto::AllowCredentials;

pub struct Authenticator {
    token: SoftToken,
    /// Its credentials, each with the user handle the relying party gave
    /// it at registration, newest last.
    credentials: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Authenticator {
    pub fn new() -> Self {
        // `true`: the token reports user verification (as a PIN or a
        // fingerprint would), which passkeys require.
        let (token, _ca) = SoftToken::new(true).expect("a software token");
        Self {
            token,
            credentials: Vec::new(),
        }
    }

    /// An exact copy of this authenticator, keys and signature counter
    /// included: a cloned device.
    pub fn clone_device(&self) -> Self {
        let bytes = self.token.to_cbor().expect("token state");
        Self {
            token: SoftToken::from_cbor(&bytes).expect("token state"),
            credentials: self.credentials.clone(),
        }
    }

    /// `navigator.credentials.create()` on a page of `origin`: the new
    /// credential as `credential.toJSON()` gives it.
    pub fn create(&mut self, origin: &str, options_json: &str) -> Result<String, WebauthnCError> {
        let options: CreationChallengeResponse =
            serde_json::from_str(options_json).expect("creation options JSON");
        let user = options.public_key.user.id.clone();
        let credential = self
            .token
            .do_registration(Url::parse(origin).unwrap(), options)?;
        self.credentials.push((credential.raw_id.clone(), user));
        Ok(serde_json::to_string(&credential).unwrap())
    }

    /// `navigator.credentials.get()` on a page of `origin`, the assertion
    /// as `credential.toJSON()` gives it. The software token keeps no
    /// resident (discoverable) credentials, so this plays that part of a
    /// passkey authenticator: it offers its own newest credential for the
    /// request (which names none) and answers with the user handle kept
    /// with it, as a passkey does.
    pub fn get(
        &mut self,
        origin: &str,
        options_json: &str,
    ) -> Result<PublicKeyCredential, WebauthnCError> {
        let mut options: RequestChallengeResponse =
            serde_json::from_str(options_json).expect("request options JSON");
        assert!(
            options.public_key.allow_credentials.is_empty(),
            "a passkey login never names credentials"
        );
        let (id, handle) = self.credentials.last().expect("a credential").clone();
        options.public_key.allow_credentials = vec![AllowCredentials {
            type_: "public-key".to_owned(),
            id,
            transports: None,
        }];
        let mut assertion = self
            .token
            .do_authentication(Url::parse(origin).unwrap(), options)?;
        assertion.response.user_handle = Some(handle);
        Ok(assertion)
    }

    /// [`Self::get`] as JSON, for a StartPasskeyLogin answer.
    pub fn sign_in(&mut self, origin: &str, started: &proto::StartPasskeyLoginResponse) -> String {
        let assertion = self
            .get(origin, &started.options_json)
            .expect("an assertion");
        serde_json::to_string(&assertion).unwrap()
    }
}
