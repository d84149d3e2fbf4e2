//! The secrets a login hands out, and how they are kept: sign-in codes (stored
//! as HMAC-SHA256 under a server key, compared in constant time) and refresh
//! tokens (256 random bits, stored as SHA-256). These are high-entropy or
//! short-lived and attempt-limited, so a fast keyed hash is the right tool; a
//! slow password hash would only cost latency.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    ChaCha20Poly1305, Nonce,
    aead::{Aead, KeyInit},
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

/// A fresh sign-in code: `len` uniformly random decimal digits from the
/// operating system's CSPRNG (via rand's thread-local generator).
pub fn generate_code(len: u8) -> String {
    (0..len)
        .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
        .collect()
}

/// Checks the `code` field: 1 to 10 ASCII digits. A well-formed code of the
/// wrong length is simply wrong (and counts as an attempt).
pub fn parse_code(code: &str) -> Result<&str, AuthError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(AuthError::invalid("code", "is required"));
    }
    if code.len() > 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::invalid(
            "code",
            "must be the digits from the email",
        ));
    }
    Ok(code)
}

/// Hashes codes with HMAC-SHA256 under a server key, binding each code to its
/// session so equal codes of two sessions have unrelated hashes.
#[derive(Clone)]
pub struct CodeHasher {
    key: [u8; 32],
}

impl fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeHasher([redacted])")
    }
}

impl CodeHasher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    pub fn hash(&self, session_id: &str, code: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(session_id.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `code` is the one whose hash is `stored`, in constant time.
    pub fn matches(&self, session_id: &str, code: &str, stored: &[u8]) -> bool {
        self.hash(session_id, code).ct_eq(stored).into()
    }
}

pub const REFRESH_PREFIX: &str = "lkr_";
const LINK_PREFIX: &str = "lkl_";
const TOKEN_BYTES: usize = 32;
/// Length of the base64url text of 32 bytes, without padding.
pub const TOKEN_B64_LEN: usize = 43;

/// `prefix` and 256 random bits in base64url.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Checks a presented token's shape (`field` names the request field);
/// whether it is known is the store's question.
fn parse_token(
    text: &str,
    prefix: &str,
    field: &'static str,
    what: &str,
) -> Result<String, AuthError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AuthError::invalid(field, "is required"));
    }
    let well_formed = text.strip_prefix(prefix).is_some_and(|b64| {
        b64.len() == TOKEN_B64_LEN
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !well_formed {
        return Err(AuthError::invalid(
            field,
            format!("is not a latchkey {what}"),
        ));
    }
    Ok(text.to_owned())
}

/// The single-use token of a magic link: `lkl_` and 256 random bits, stored
/// only as SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkToken(String);

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken([redacted])")
    }
}

impl LinkToken {
    pub fn generate() -> Self {
        Self(random_token(LINK_PREFIX))
    }

    pub fn parse(text: &str, field: &'static str) -> Result<Self, AuthError> {
        parse_token(text, LINK_PREFIX, field, "link token").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored form: SHA-256 of the token text.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// An opaque refresh token: `lkr_` and 256 random bits in base64url. The
/// prefix lets secret scanners recognise a leaked token.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

impl RefreshToken {
    pub fn generate() -> Self {
        Self(random_token(REFRESH_PREFIX))
    }

    /// Checks the shape of a presented token (`field` names the request
    /// field); whether it is known is the store's question.
    pub fn parse(text: &str, field: &'static str) -> Result<Self, AuthError> {
        parse_token(text, REFRESH_PREFIX, field, "refresh token").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The stored form: SHA-256 of the token text.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Seals `successor` under a key only this token's holder can derive, so
    /// the database keeps nothing that yields a usable token, yet a client
    /// retrying with this token inside the grace window gets the same
    /// successor back. Each token has one successor, so each derived key
    /// encrypts exactly once and a fixed nonce is safe.
    pub fn seal_successor(&self, successor: &RefreshToken) -> Vec<u8> {
        self.successor_cipher()
            .encrypt(&Nonce::default(), successor.0.as_bytes())
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers")
    }

    /// Opens what [`RefreshToken::seal_successor`] sealed with this token.
    pub fn open_successor(&self, sealed: &[u8]) -> Option<RefreshToken> {
        let plain = self
            .successor_cipher()
            .decrypt(&Nonce::default(), sealed)
            .ok()?;
        String::from_utf8(plain).ok().map(RefreshToken)
    }

    fn successor_cipher(&self) -> ChaCha20Poly1305 {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key");
        mac.update(b"latchkey/v1/refresh-successor");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        ChaCha20Poly1305::new((&key).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_requested_number_of_digits_and_vary() {
        for len in 6..=10 {
            let code = generate_code(len);
            assert_eq!(code.len(), usize::from(len));
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| generate_code(6)).collect();
        assert!(distinct.len() > 45, "codes repeat too often: {distinct:?}");
    }

    #[test]
    fn every_digit_appears_in_every_position() {
        let mut seen = [[false; 10]; 6];
        for _ in 0..2000 {
            for (pos, b) in generate_code(6).bytes().enumerate() {
                seen[pos][usize::from(b - b'0')] = true;
            }
        }
        assert!(seen.iter().flatten().all(|s| *s));
    }

    #[test]
    fn code_field_must_be_digits() {
        assert_eq!(parse_code(" 123456 ").unwrap(), "123456");
        for bad in [
            "",
            "12a456",
            "12 3456",
            "-12345",
            "１２３４５６",
            "12345678901",
        ] {
            assert_eq!(
                parse_code(bad).unwrap_err().field(),
                Some("code"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn code_hash_is_bound_to_key_session_and_code() {
        let hasher = CodeHasher::new([1; 32]);
        let stored = hasher.hash("s1", "123456");
        assert!(hasher.matches("s1", "123456", &stored));
        assert!(!hasher.matches("s1", "123457", &stored));
        assert!(!hasher.matches("s2", "123456", &stored));
        assert!(!CodeHasher::new([2; 32]).matches("s1", "123456", &stored));
        assert!(!hasher.matches("s1", "123456", &stored[..31]));
    }

    #[test]
    fn refresh_tokens_round_trip_through_parse_and_hash_differs_from_text() {
        let token = RefreshToken::generate();
        assert!(token.as_str().starts_with("lkr_"));
        assert_eq!(token.as_str().len(), 4 + 43);
        let parsed = RefreshToken::parse(token.as_str(), "refresh_token").unwrap();
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(RefreshToken::generate().hash(), token.hash());
        for bad in [
            "",
            "lkr_short",
            "abc",
            &token.as_str().replace("lkr_", "xxx_"),
        ] {
            assert!(
                RefreshToken::parse(bad, "refresh_token").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn successor_opens_only_with_the_token_that_sealed_it() {
        let old = RefreshToken::generate();
        let next = RefreshToken::generate();
        let sealed = old.seal_successor(&next);
        assert_eq!(old.open_successor(&sealed), Some(next.clone()));
        assert_eq!(RefreshToken::generate().open_successor(&sealed), None);
        assert!(!String::from_utf8_lossy(&sealed).contains(&next.as_str()[4..]));
    }

    #[test]
    fn link_tokens_are_their_own_kind() {
        let link = LinkToken::generate();
        assert!(link.as_str().starts_with("lkl_"));
        assert_eq!(LinkToken::parse(link.as_str(), "link_token").unwrap(), link);
        let refresh = RefreshToken::generate();
        assert!(LinkToken::parse(refresh.as_str(), "link_token").is_err());
        assert!(RefreshToken::parse(link.as_str(), "refresh_token").is_err());
        assert!(!format!("{link:?}").contains(&link.as_str()[4..]));
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let token = RefreshToken::generate();
        assert!(!format!("{token:?}").contains(&token.as_str()[4..]));
    }
}
