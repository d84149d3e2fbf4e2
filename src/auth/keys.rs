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

use crate::{
    clock::{Clock, UnixMillis, millis},
    kek::Kek,
    store::{NewSigningKey, SigningKeyRow, Store},
};

/// JWT signature algorithms for access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    /// Ed25519 (fast, small; the default).
    EdDSA,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with a 2048-bit key and SHA-256 (for verifiers that
    /// know nothing else).
    RS256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [Self::EdDSA, Self::ES256, Self::RS256];

    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }
}

/// A public JSON Web Key (RFC 7517), as published. Fields that do not apply
/// to the key type are empty and left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub x: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub y: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub n: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub e: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// The published key set, built once per key change.
#[derive(Debug)]
pub struct Jwks {
    /// Changes whenever the set changes (for caches keyed on it).
    pub version: u64,
    pub keys: Vec<Jwk>,
    /// `{"keys":[…]}`, serialised once.
    pub json: bytes::Bytes,
    /// A strong validator of `json` (for HTTP ETags): the same on every
    /// replica that publishes the same keys.
    pub etag: String,
}

/// A private key parsed and ready to sign.
enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl Signer {
    fn generate(alg: SigningAlg) -> anyhow::Result<(Self, Vec<u8>)> {
        match alg {
            SigningAlg::EdDSA => {
                let mut seed = [0u8; 32];
                rand::fill(&mut seed);
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                Ok((Self::Ed25519(key), seed.to_vec()))
            }
            SigningAlg::ES256 => loop {
                // Almost every 32-byte string is a valid scalar; retry the rest.
                let mut scalar = [0u8; 32];
                rand::fill(&mut scalar);
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&scalar) {
                    return Ok((Self::P256(key), scalar.to_vec()));
                }
            },
            SigningAlg::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .context("generating an RSA key")?;
                let der = key.to_pkcs1_der().context("encoding an RSA key")?;
                let bytes = der.as_bytes().to_vec();
                Ok((
                    Self::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key))),
                    bytes,
                ))
            }
        }
    }

    fn from_bytes(alg: SigningAlg, bytes: &[u8]) -> anyhow::Result<Self> {
        match alg {
            SigningAlg::EdDSA => {
                let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow!("bad Ed25519 seed"))?;
                Ok(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
            SigningAlg::ES256 => Ok(Self::P256(
                p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| anyhow!("bad P-256 key"))?,
            )),
            SigningAlg::RS256 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(bytes).context("bad RSA key")?;
                Ok(Self::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key))))
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
            Self::P256(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            Self::Rsa(key) => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                key.sign(message).to_vec()
            }
        }
    }

    /// The public key as a JWK without `kid` (which is derived from it).
    fn public_jwk(&self, alg: SigningAlg) -> Jwk {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = Jwk {
            alg: alg.as_str().to_owned(),
            use_: "sig".to_owned(),
            ..Jwk::default()
        };
        match self {
            Self::Ed25519(key) => {
                jwk.kty = "OKP".into();
                jwk.crv = "Ed25519".into();
                jwk.x = b64(key.verifying_key().as_bytes());
            }
            Self::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                jwk.kty = "EC".into();
                jwk.crv = "P-256".into();
                jwk.x = b64(point.x().expect("uncompressed point has x"));
                jwk.y = b64(point.y().expect("uncompressed point has y"));
            }
            Self::Rsa(key) => {
                use rsa::traits::PublicKeyParts;
                let public = key.as_ref().as_ref().to_public_key();
                jwk.kty = "RSA".into();
                jwk.n = b64(&public.n().to_bytes_be());
                jwk.e = b64(&public.e().to_bytes_be());
            }
        }
        jwk
    }
}

/// The RFC 7638 thumbprint of a public JWK: a stable, collision-free `kid`.
fn thumbprint(jwk: &Jwk) -> String {
    // Required members only, in lexicographic order, no whitespace.
    let canonical = match jwk.kty.as_str() {
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, jwk.crv, jwk.x),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk.crv, jwk.x, jwk.y
        ),
        _ => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, jwk.e, jwk.n),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

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

/// Adds a new key for `tenant_id` that signs after `activate_in`; every older
/// key stays published until `retire_after` past that moment (the longest
/// access-token lifetime plus margins), then disappears from the JWKS.
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
