//! Key material: the algorithms, generating and parsing keys, signing, and
//! the public halves as JWKs.

use anyhow::{Context, anyhow};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use sha2::{Digest, Sha256};

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
pub(super) enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl Signer {
    pub(super) fn generate(alg: SigningAlg) -> anyhow::Result<(Self, Vec<u8>)> {
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

    pub(super) fn from_bytes(alg: SigningAlg, bytes: &[u8]) -> anyhow::Result<Self> {
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

    pub(super) fn sign(&self, message: &[u8]) -> Vec<u8> {
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
    pub(super) fn public_jwk(&self, alg: SigningAlg) -> Jwk {
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
pub(super) fn thumbprint(jwk: &Jwk) -> String {
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
