//! A key's life after a rotation: when the keys it replaces leave the JWKS,
//! and which state each key is in.

use std::time::Duration;

use crate::{clock::UnixMillis, store::SigningKeyRow};

/// How long the keys a rotation replaces stay published after the new key
/// starts signing: the longest access-token lifetime the tenant may have
/// used, plus the time a replica may take to notice the new key, plus clock
/// skew.
pub fn retirement_delay(longest_token_ttl: Duration, reload_interval: Duration) -> Duration {
    longest_token_ttl + reload_interval + Duration::from_secs(60)
}

/// [`retirement_delay`] for a rotation of one tenant's keys: older keys stay
/// published until every token they may still sign has expired, by this
/// tenant's token lifetime or the server default if that is longer (it may
/// just have changed).
pub fn retirement_delay_for(
    tenant_token_ttl: Duration,
    server_token_ttl: Duration,
    reload_interval: Duration,
) -> Duration {
    retirement_delay(tenant_token_ttl.max(server_token_ttl), reload_interval)
}

/// Where a signing key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet (verifiers fetch it first).
    Pending,
    /// The key that signs.
    Signing,
    /// Replaced, still published until its tokens have expired.
    Retiring,
    /// No longer published.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Signing => "signing",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
        }
    }
}

/// The state of each of a tenant's keys at `now`, in the same order: the
/// newest activated, still published key signs.
pub fn key_states(keys: &[SigningKeyRow], now: UnixMillis) -> Vec<KeyState> {
    let published = |k: &SigningKeyRow| k.published_until.is_none_or(|u| u > now);
    let signer = keys
        .iter()
        .filter(|k| k.activates_at <= now && published(k))
        .map(|k| k.generation)
        .max();
    keys.iter()
        .map(|k| {
            if !published(k) {
                KeyState::Retired
            } else if Some(k.generation) == signer {
                KeyState::Signing
            } else if k.activates_at > now {
                KeyState::Pending
            } else {
                KeyState::Retiring
            }
        })
        .collect()
}
