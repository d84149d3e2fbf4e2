//! Access-token signing keys: generation, rotation, the in-memory key ring
//! that signs, and the JWKS that publishes the public halves. Every tenant
//! has keys of its own.
//!
//! Keys live in the database with the private part sealed under the KEK. Each
//! process decrypts and parses a key once, when it first sees it, and reloads
//! the key list periodically so rotations made elsewhere take effect without
//! a restart. A key is published from the moment it is created, signs from
//! its activation time, and stays published after a newer key takes over
//! until every token it signed has expired.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use sha2::{Digest, Sha256};

mod lifecycle;
mod material;

pub use lifecycle::{KeyState, key_states, retirement_delay, retirement_delay_for};
pub use material::{Jwk, Jwks, SigningAlg};
use material::{Signer, thumbprint};

use crate::{
    clock::{Clock, UnixMillis, millis},
    kek::Kek,
    store::{NewSigningKey, SigningKeyRow, Store},
};

/// A key loaded into memory.
struct LoadedKey {
    row: SigningKeyRow,
    signer: Signer,
    /// base64url of the JOSE header `{"alg":…,"kid":…,"typ":"JWT"}`.
    header_b64: String,
    jwk: Jwk,
    /// The public half, for verifying.
    decoding: jsonwebtoken::DecodingKey,
    algorithm: jsonwebtoken::Algorithm,
}

impl LoadedKey {
    fn load(row: SigningKeyRow, kek: &Kek) -> anyhow::Result<Self> {
        let alg = SigningAlg::from_name(&row.alg)
            .ok_or_else(|| anyhow!("key {} has unknown algorithm {}", row.kid, row.alg))?;
        let bytes = kek
            .open(
                sealing_context(&row.kid).as_bytes(),
                &row.private_key_sealed,
            )
            .with_context(|| format!("opening signing key {}", row.kid))?;
        let signer = Signer::from_bytes(alg, &bytes)?;
        let mut jwk = signer.public_jwk(alg);
        jwk.kid = row.kid.clone();
        let header = serde_json::json!({"alg": alg.as_str(), "kid": row.kid, "typ": "JWT"});
        let (decoding, algorithm) = match alg {
            SigningAlg::EdDSA => (
                jsonwebtoken::DecodingKey::from_ed_components(&jwk.x),
                jsonwebtoken::Algorithm::EdDSA,
            ),
            SigningAlg::ES256 => (
                jsonwebtoken::DecodingKey::from_ec_components(&jwk.x, &jwk.y),
                jsonwebtoken::Algorithm::ES256,
            ),
            SigningAlg::RS256 => (
                jsonwebtoken::DecodingKey::from_rsa_components(&jwk.n, &jwk.e),
                jsonwebtoken::Algorithm::RS256,
            ),
        };
        let decoding = decoding.with_context(|| format!("public half of key {}", row.kid))?;
        Ok(Self {
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            row,
            signer,
            jwk,
            decoding,
            algorithm,
        })
    }
}

fn sealing_context(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// The keys one process holds, immutable; replaced whole on change.
struct KeySet {
    keys: Vec<Arc<LoadedKey>>,
    jwks: Arc<Jwks>,
}

impl KeySet {
    /// The key that signs at `now`: the newest one already active.
    fn signing_key(&self, now: UnixMillis) -> Option<&Arc<LoadedKey>> {
        self.keys
            .iter()
            .filter(|k| k.row.activates_at <= now)
            .max_by_key(|k| k.row.generation)
    }
}

/// What `keys rotate` made.
#[derive(Debug)]
pub struct RotatedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub activates_at: UnixMillis,
    pub older_keys_retire_at: UnixMillis,
}

/// Signs access tokens with the current key and publishes the key set.
/// Cheap to clone.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<KeyRingInner>,
}

struct KeyRingInner {
    tenant_id: String,
    store: Store,
    kek: Kek,
    clock: Clock,
    set: RwLock<Arc<KeySet>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("tenant_id", &self.inner.tenant_id)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the tenant's keys, creating the first one (active at once) when
    /// there is none.
    pub async fn open(
        store: Store,
        kek: Kek,
        clock: Clock,
        tenant_id: &str,
        alg: SigningAlg,
    ) -> anyhow::Result<Self> {
        let ring = Self {
            inner: Arc::new(KeyRingInner {
                tenant_id: tenant_id.to_owned(),
                store,
                kek,
                clock,
                set: RwLock::new(Arc::new(KeySet {
                    keys: Vec::new(),
                    jwks: Arc::new(Jwks {
                        version: 0,
                        keys: Vec::new(),
                        json: bytes::Bytes::from_static(br#"{"keys":[]}"#),
                        etag: String::new(),
                    }),
                })),
            }),
        };
        ring.reload().await?;
        if ring.current().keys.is_empty() {
            let inner = &ring.inner;
            let now = inner.clock.now_ms();
            // Generation 1 activates at once. If another replica creates it
            // first, ours is discarded and theirs is loaded.
            let times = KeyTimes {
                now,
                activates_at: now,
                retire_older_at: now,
            };
            insert_new_key(&inner.store, &inner.kek, tenant_id, alg, 1, times).await?;
            ring.reload().await?;
            if ring.current().keys.is_empty() {
                bail!("no signing key could be created");
            }
        }
        Ok(ring)
    }

    fn current(&self) -> Arc<KeySet> {
        self.inner.set.read().expect("key set lock").clone()
    }

    /// Re-reads the published keys, parsing only keys not seen before.
    /// Returns whether the set changed.
    pub async fn reload(&self) -> anyhow::Result<bool> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let rows = inner
            .store
            .published_signing_keys(&inner.tenant_id, now)
            .await?;
        let current = self.current();
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            match current.keys.iter().find(|k| k.row == row) {
                Some(known) => keys.push(known.clone()),
                // A key this process cannot open (sealed under another KEK, or
                // corrupt) is left out, loudly, instead of stopping every
                // other key from loading.
                None => match LoadedKey::load(row, &inner.kek) {
                    Ok(key) => keys.push(Arc::new(key)),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "skipping a signing key"),
                },
            }
        }
        let unchanged = keys.len() == current.keys.len()
            && keys.iter().zip(&current.keys).all(|(a, b)| a.row == b.row);
        if unchanged {
            return Ok(false);
        }
        let jwk_list: Vec<Jwk> = keys.iter().map(|k| k.jwk.clone()).collect();
        let json = serde_json::to_vec(&serde_json::json!({ "keys": jwk_list }))?;
        let etag = URL_SAFE_NO_PAD.encode(&Sha256::digest(&json)[..16]);
        let jwks = Arc::new(Jwks {
            version: current.jwks.version + 1,
            keys: jwk_list,
            json: json.into(),
            etag,
        });
        *inner.set.write().expect("key set lock") = Arc::new(KeySet { keys, jwks });
        Ok(true)
    }

    /// The published key set.
    pub fn jwks(&self) -> Arc<Jwks> {
        self.current().jwks.clone()
    }

    /// Signs `claims` as a compact JWS with the key active now. Returns the
    /// token and the `kid` that signed it.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let set = self.current();
        let now = self.inner.clock.now_ms();
        let key = set
            .signing_key(now)
            .ok_or_else(|| anyhow!("no signing key is active"))?;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let mut token = String::with_capacity(key.header_b64.len() + payload.len() + 100);
        token.push_str(&key.header_b64);
        token.push('.');
        token.push_str(&payload);
        let signature = key.signer.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// The claims of a token signed by one of the published keys (found by
    /// its `kid`; the header's `alg` must be that key's). `None` for anything
    /// else. Lifetime, issuer and audience are left to the caller, which
    /// checks them against the service clock and the tenant.
    pub fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Option<T> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let set = self.current();
        let key = set.keys.iter().find(|k| k.row.kid == kid)?;
        let mut validation = jsonwebtoken::Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Every tenant's signing keys. Each tenant signs with keys of its own and
/// publishes them in a JWKS of its own, so a token of one tenant never
/// verifies against another tenant's key set, whatever its claims say. A
/// tenant's ring is opened (its first key made, active at once) the first
/// time the tenant needs it. Cheap to clone.
#[derive(Clone)]
pub struct KeyRings {
    inner: Arc<RingsInner>,
}

struct RingsInner {
    store: Store,
    kek: Kek,
    clock: Clock,
    /// Algorithm of a tenant's first key.
    alg: SigningAlg,
    rings: RwLock<HashMap<String, KeyRing>>,
    /// One opening at a time in this process (another process racing us is
    /// settled by the database: one generation 1 per tenant).
    opening: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KeyRings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rings = self.inner.rings.read().expect("key rings lock");
        f.debug_struct("KeyRings")
            .field("tenants", &rings.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyRings {
    /// Opens the rings of `tenant_ids` (creating their first keys where
    /// there are none).
    pub async fn open<'a>(
        store: Store,
        kek: Kek,
        clock: Clock,
        alg: SigningAlg,
        tenant_ids: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<Self> {
        let rings = Self {
            inner: Arc::new(RingsInner {
                store,
                kek,
                clock,
                alg,
                rings: RwLock::new(HashMap::new()),
                opening: tokio::sync::Mutex::new(()),
            }),
        };
        for id in tenant_ids {
            rings
                .ring(id)
                .await
                .with_context(|| format!("loading the signing keys of tenant {id}"))?;
        }
        Ok(rings)
    }

    /// The tenant's ring if this process has opened it.
    pub fn get(&self, tenant_id: &str) -> Option<KeyRing> {
        let rings = self.inner.rings.read().expect("key rings lock");
        rings.get(tenant_id).cloned()
    }

    /// The tenant's ring, opened now if this process has not yet.
    pub async fn ring(&self, tenant_id: &str) -> anyhow::Result<KeyRing> {
        if let Some(ring) = self.get(tenant_id) {
            return Ok(ring);
        }
        let inner = &self.inner;
        let _one_at_a_time = inner.opening.lock().await;
        if let Some(ring) = self.get(tenant_id) {
            return Ok(ring);
        }
        let ring = KeyRing::open(
            inner.store.clone(),
            inner.kek.clone(),
            inner.clock.clone(),
            tenant_id,
            inner.alg,
        )
        .await?;
        inner
            .rings
            .write()
            .expect("key rings lock")
            .insert(tenant_id.to_owned(), ring.clone());
        Ok(ring)
    }

    /// Re-reads every open ring's keys; logs the rings whose set changed.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let rings: Vec<KeyRing> = {
            let rings = self.inner.rings.read().expect("key rings lock");
            rings.values().cloned().collect()
        };
        for ring in rings {
            if ring.reload().await? {
                tracing::info!(
                    tenant = %ring.inner.tenant_id,
                    keys = ?ring.jwks().keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
                    "signing keys changed"
                );
            }
        }
        Ok(())
    }

    /// Reloads every `interval` until `stop` fires; errors are logged and
    /// retried at the next tick.
    pub async fn reload_periodically(
        self,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %format!("{e:#}"), "reloading signing keys failed");
            }
        }
    }
}

/// key stays published until `retire_after` past that moment (the longest
/// access-token lifetime plus margins), then disappears from the JWKS.
/// Adds a new key for `tenant_id` that signs after `activate_in`; every older
pub async fn rotate(
    store: &Store,
    kek: &Kek,
    clock: &Clock,
    tenant_id: &str,
    alg: SigningAlg,
    activate_in: Duration,
    retire_after: Duration,
) -> anyhow::Result<RotatedKey> {
    // A concurrent rotation may take our generation number: retry on top.
    for _ in 0..5 {
        let now = clock.now_ms();
        let existing = store.all_signing_keys(tenant_id).await?;
        // A key sealed under another KEK would be unusable by the service:
        // prove this KEK is the service's by opening the newest existing key.
        if let Some(newest) = existing.last() {
            LoadedKey::load(newest.clone(), kek).context(
                "this key-encryption key cannot open the existing signing keys: \
                 run with the service's LATCHKEY_KEY_ENCRYPTION_KEY (or its data directory)",
            )?;
        }
        let generation = existing.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
        let activates_at = now + millis(activate_in);
        let retire_at = activates_at + millis(retire_after);
        let times = KeyTimes {
            now,
            activates_at,
            retire_older_at: retire_at,
        };
        if let Some(kid) = insert_new_key(store, kek, tenant_id, alg, generation, times).await? {
            return Ok(RotatedKey {
                kid,
                alg,
                activates_at,
                older_keys_retire_at: retire_at,
            });
        }
    }
    bail!("could not add a signing key: concurrent rotations kept winning")
}

struct KeyTimes {
    now: UnixMillis,
    activates_at: UnixMillis,
    retire_older_at: UnixMillis,
}

/// Inserts a freshly generated key (and schedules the retirement of the older
/// ones); `None` when that generation exists.
async fn insert_new_key(
    store: &Store,
    kek: &Kek,
    tenant_id: &str,
    alg: SigningAlg,
    generation: i32,
    times: KeyTimes,
) -> anyhow::Result<Option<String>> {
    let (signer, private_bytes) = Signer::generate(alg)?;
    let kid = thumbprint(&signer.public_jwk(alg));
    let sealed = kek.seal(sealing_context(&kid).as_bytes(), &private_bytes);
    let inserted = store
        .insert_signing_key(
            &NewSigningKey {
                tenant_id,
                generation,
                kid: &kid,
                alg: alg.as_str(),
                private_key_sealed: &sealed,
                created_at: times.now,
                activates_at: times.activates_at,
            },
            times.retire_older_at,
        )
        .await?;
    Ok(inserted.then_some(kid))
}
