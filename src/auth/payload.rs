//! What a queued email carries besides its recipient: written (sealed) by
//! the login flows in their transaction, read by the outbox worker.

use serde::{Deserialize, Serialize};

use crate::{clock::UnixMillis, kek::Kek};

/// What a queued email needs besides its recipient. A sign-in email's holds
/// the plaintext code and link, so it is stored sealed under the KEK and
/// erased once sent.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignInPayload {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
    /// When the proof expires if the email goes out at once.
    pub expires_at: UnixMillis,
    /// However late the email goes out, the proof never outlives this.
    #[serde(default)]
    pub extend_until: UnixMillis,
    #[serde(default)]
    pub locale: String,
    /// A change-of-address notice: the new address, masked.
    #[serde(default)]
    pub new_email: Option<String>,
}

impl std::fmt::Debug for SignInPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInPayload")
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("link", &self.link.as_ref().map(|_| "[redacted]"))
            .field("expires_at", &self.expires_at)
            .field("extend_until", &self.extend_until)
            .field("locale", &self.locale)
            .field("new_email", &self.new_email)
            .finish()
    }
}

fn sealing_context(mail_id: &str) -> String {
    format!("outbox:{mail_id}")
}

/// Seals a payload for the outbox row `mail_id`.
pub fn seal(kek: &Kek, mail_id: &str, payload: &SignInPayload) -> Vec<u8> {
    let json = serde_json::to_vec(payload).expect("payload serialises");
    kek.seal(sealing_context(mail_id).as_bytes(), &json)
}

/// Opens the payload of the outbox row `mail_id`.
pub fn open(kek: &Kek, mail_id: &str, sealed: &[u8]) -> anyhow::Result<SignInPayload> {
    let json = kek.open(sealing_context(mail_id).as_bytes(), sealed)?;
    Ok(serde_json::from_slice(&json)?)
}
