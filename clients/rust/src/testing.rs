//! Keys, tokens and key sets made here, for the unit tests.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;

use crate::{FetchError, JwksSource, proto::Jwk};

/// A signing key made here, and its public JWK as latchkey publishes it.
pub struct TestKey {
    pub encoding: EncodingKey,
    pub alg: Algorithm,
    pub jwk: Jwk,
}

pub fn ed25519(kid: &str, seed: u8) -> TestKey {
    // PKCS#8 v1 of an Ed25519 seed (RFC 8410): a fixed prefix and the seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend([seed; 32]);
    test_key(kid, EncodingKey::from_ed_der(&der), Algorithm::EdDSA)
}

pub fn p256(kid: &str, scalar: u8) -> TestKey {
    let secret = p256::SecretKey::from_slice(&[scalar; 32]).unwrap();
    let der = secret.to_pkcs8_der().unwrap();
    test_key(
        kid,
        EncodingKey::from_ec_der(der.as_bytes()),
        Algorithm::ES256,
    )
}

pub fn test_key(kid: &str, encoding: EncodingKey, alg: Algorithm) -> TestKey {
    // The public half through jsonwebtoken's JWK, then into the proto
    // Jwk through its serde: the JSON of a real JWKS.
    let mut public = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).unwrap();
    public.common.key_id = Some(kid.to_owned());
    let mut json = serde_json::to_value(&public).unwrap();
    json["use"] = "sig".into();
    let jwk: Jwk = serde_json::from_value(json).unwrap();
    assert_eq!(jwk.kid, kid);
    TestKey { encoding, alg, jwk }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn payload() -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "iss": "iss", "aud": "aud", "sub": "u1", "email": "ada@example.com", "sid": "s1",
        "tid": "t", "iat": now, "nbf": now, "exp": now + 60, "jti": "j1",
    })
}

pub fn sign(key: &TestKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.jwk.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// An in-memory key set that counts how often it is read, and can fail.
#[derive(Clone, Default)]
pub struct Keys {
    pub keys: Arc<Mutex<Vec<Jwk>>>,
    pub reads: Arc<AtomicU64>,
    pub down: Arc<Mutex<bool>>,
}

impl Keys {
    pub fn of(keys: &[&TestKey]) -> Self {
        let set = Self::default();
        set.keys
            .lock()
            .unwrap()
            .extend(keys.iter().map(|k| k.jwk.clone()));
        set
    }
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl JwksSource for Keys {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, FetchError>> + Send + '_>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if *self.down.lock().unwrap() {
                return Err("the key server is down".into());
            }
            Ok(self.keys.lock().unwrap().clone())
        })
    }
}
