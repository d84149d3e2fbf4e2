//! API keys: how callers authenticate. A key reads
//! `lk_<scope>_<prefix>_<secret>`: the prefix is public and finds the key, the
//! secret is 256 random bits, and only SHA-256 of the whole key is stored.
//!
//! Every process keeps all keys in memory (reloaded within a second of any
//! change anywhere), so checking a key costs no database round trip, and an
//! unknown prefix takes the same path as a known one (a hash and a
//! constant-time comparison against a dummy), so timing does not reveal which
//! prefixes exist. "Last used" is kept in memory and written in batches.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    clock::{Clock, UnixMillis},
    error::AuthError,
    store::{ApiKeyRow, Store},
};

/// What a key may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The AuthService, for its own tenant.
    App,
    /// The AdminService (every tenant).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Admin => "admin",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Admin => "adm",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "app" => Some(Self::App),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Characters of the public prefix: lowercase base32, unambiguous to read.
const PREFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const PREFIX_LEN: usize = 12;
const SECRET_B64_LEN: usize = 43;

/// A freshly made key: its text is shown once, then only its hash remains.
pub struct NewKey {
    pub prefix: String,
    pub text: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Makes a key for `scope`.
pub fn generate(scope: Scope) -> NewKey {
    let prefix: String = (0..PREFIX_LEN)
        .map(|_| char::from(PREFIX_ALPHABET[rand::random_range(0..PREFIX_ALPHABET.len())]))
        .collect();
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let text = format!(
        "lk_{}_{prefix}_{}",
        scope.tag(),
        URL_SAFE_NO_PAD.encode(secret)
    );
    NewKey {
        hash: hash(&text),
        prefix,
        text,
    }
}

fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The prefix of a well-shaped key, `None` for anything else.
fn prefix_of(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix("lk_app_")
        .or_else(|| text.strip_prefix("lk_adm_"))?;
    let (prefix, secret) = rest.split_at_checked(PREFIX_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let shaped = prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b))
        && secret.len() == SECRET_B64_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then_some(prefix)
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: String,
    pub scope: Scope,
    pub key_prefix: String,
}

#[derive(Clone, Debug)]
struct Entry {
    tenant_id: String,
    scope: Scope,
    hash: [u8; 32],
    expires_at: Option<UnixMillis>,
    revoked: bool,
}

/// Every key, in memory. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    store: Store,
    clock: Clock,
    keys: Arc<RwLock<Arc<HashMap<String, Entry>>>>,
    last_used: Arc<Mutex<HashMap<String, UnixMillis>>>,
    /// Reloads run one at a time, so a slow one can never put back an older
    /// list (say, with a revoked key still valid) after a newer one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// When this copy was last confirmed current; keys are refused (as
    /// UNAVAILABLE) when that is older than `max_staleness`, so a replica cut
    /// off from the database cannot go on honouring a revoked key.
    confirmed: Arc<Mutex<tokio::time::Instant>>,
    max_staleness: std::time::Duration,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

/// How long a copy of the keys may go unconfirmed before keys are refused:
/// inside the 5 s in which a revocation must reach every replica.
pub const MAX_STALENESS: std::time::Duration = std::time::Duration::from_secs(4);

/// Compared against when the prefix is unknown, so that path costs the same.
const DUMMY_HASH: [u8; 32] = [0x5a; 32];

impl ApiKeys {
    pub async fn load(store: Store, clock: Clock) -> Result<Self, AuthError> {
        let keys = Self {
            store,
            clock,
            keys: Arc::default(),
            last_used: Arc::default(),
            reloading: Arc::default(),
            confirmed: Arc::new(Mutex::new(tokio::time::Instant::now())),
            max_staleness: MAX_STALENESS,
        };
        keys.reload().await?;
        Ok(keys)
    }

    /// Records that this copy is current (the change counters were read and
    /// nothing changed, or a reload finished).
    pub fn confirm_current(&self) {
        *self.confirmed.lock().expect("confirmed lock") = tokio::time::Instant::now();
    }

    pub async fn reload(&self) -> Result<(), AuthError> {
        let _one_at_a_time = self.reloading.lock().await;
        let started = tokio::time::Instant::now();
        let rows = self.store.all_api_keys().await?;
        let map = rows
            .into_iter()
            .filter_map(|row: ApiKeyRow| {
                let scope = Scope::parse(&row.scope)?;
                let hash: [u8; 32] = row.secret_hash.as_slice().try_into().ok()?;
                Some((
                    row.prefix,
                    Entry {
                        tenant_id: row.tenant_id,
                        scope,
                        hash,
                        expires_at: row.expires_at,
                        revoked: row.revoked_at.is_some(),
                    },
                ))
            })
            .collect();
        *self.keys.write().expect("keys lock") = Arc::new(map);
        let mut confirmed = self.confirmed.lock().expect("confirmed lock");
        *confirmed = (*confirmed).max(started);
        Ok(())
    }

    /// Checks an `authorization` header value. Missing, malformed, unknown,
    /// expired and revoked keys get the same error.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if self.confirmed.lock().expect("confirmed lock").elapsed() > self.max_staleness {
            return Err(AuthError::Unavailable(anyhow::anyhow!(
                "the API keys could not be confirmed current for {:?}",
                self.max_staleness
            )));
        }
        let presented = authorization
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .unwrap_or_default();
        let presented_hash = hash(presented);
        let prefix = prefix_of(presented);
        let keys = self.keys.read().expect("keys lock").clone();
        let entry = prefix.and_then(|p| keys.get(p));
        let expected = entry.map_or(&DUMMY_HASH, |e| &e.hash);
        let matches: bool = presented_hash.ct_eq(expected).into();
        let now = self.clock.now_ms();
        match (matches, entry, prefix) {
            (true, Some(e), Some(p)) if !e.revoked && e.expires_at.is_none_or(|exp| exp > now) => {
                self.last_used
                    .lock()
                    .expect("last used lock")
                    .insert(p.to_owned(), now);
                Ok(Caller {
                    tenant_id: e.tenant_id.clone(),
                    scope: e.scope,
                    key_prefix: p.to_owned(),
                })
            }
            _ => Err(AuthError::Unauthenticated),
        }
    }

    /// Writes the "last used" times gathered since the previous flush.
    pub async fn flush_last_used(&self) -> Result<(), AuthError> {
        let batch: Vec<(String, UnixMillis)> =
            std::mem::take(&mut *self.last_used.lock().expect("last used lock"))
                .into_iter()
                .collect();
        if !batch.is_empty() {
            self.store.record_api_keys_used(&batch).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = generate(Scope::App);
        assert!(key.text.starts_with("lk_app_"));
        assert_eq!(prefix_of(&key.text), Some(key.prefix.as_str()));
        assert_eq!(key.hash, hash(&key.text));
        let admin = generate(Scope::Admin);
        assert!(admin.text.starts_with("lk_adm_"));
        assert_ne!(admin.prefix, key.prefix);
        assert!(!format!("{key:?}").contains(&key.text[20..]));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let key = generate(Scope::App).text;
        for bad in [
            "",
            "lk_app_",
            "Bearer x",
            &key[..key.len() - 1],
            &format!("{key}x"),
            &key.replacen("lk_app_", "lk_xyz_", 1),
            &key.to_uppercase(),
        ] {
            assert_eq!(prefix_of(bad), None, "{bad:?}");
        }
    }
}
