//! The key-encryption key (KEK). Private signing keys and queued emails (which
//! hold a plaintext code until they are sent) are sealed under it with
//! XChaCha20-Poly1305, so a copy of the database alone reveals neither. The
//! keyed hash of sign-in codes uses a sub-key derived from it.

use std::{fmt, io::Write, path::Path};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Version byte in front of every sealed value, so the format can change.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// A 256-bit key-encryption key.
#[derive(Clone)]
pub struct Kek([u8; 32]);

impl Drop for Kek {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

/// Where the KEK came from (start-up logs a warning for a generated one).
#[derive(Debug, PartialEq, Eq)]
pub enum KekSource {
    Configured,
    GeneratedFile,
    ExistingFile,
}

impl Kek {
    /// Decodes a configured key: 32 bytes in standard base64.
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .context("not valid base64 (generate one with `openssl rand -base64 32`)")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| anyhow::anyhow!("must decode to 32 bytes, got {}", b.len()))?;
        Ok(Self(key))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self(key)
    }

    /// The configured key, or the one in `<data_dir>/kek`, creating that file
    /// (mode 0600) with a fresh key on first use.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<(Self, KekSource)> {
        if let Some(text) = configured {
            return Ok((Self::from_base64(text)?, KekSource::Configured));
        }
        let path = data_dir.join("kek");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let kek = Self::from_base64(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((kek, KekSource::ExistingFile))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::files::create_private_dir(data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                let kek = Self::generate();
                let mut file = crate::files::private_file()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                writeln!(file, "{}", STANDARD.encode(kek.0))
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok((kek, KekSource::GeneratedFile))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Encrypts and authenticates `plaintext`. `context` is bound to the
    /// ciphertext (it must be given again to open it) so a sealed value cannot
    /// be moved to another row or purpose.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed by [`Kek::seal`] with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_V1 {
            bail!("sealed value has an unknown format");
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt a sealed value: was it sealed under another key-encryption key?"
                )
            })
    }

    /// A sub-key for one purpose, so the KEK itself is used only for sealing.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(b"latchkey/v1/");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_value_opens_only_with_the_same_key_and_context() {
        let kek = Kek::generate();
        let sealed = kek.seal(b"row-1", b"secret");
        assert_eq!(kek.open(b"row-1", &sealed).unwrap(), b"secret");
        assert!(kek.open(b"row-2", &sealed).is_err());
        assert!(Kek::generate().open(b"row-1", &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn configured_key_must_be_32_bytes_of_base64() {
        assert!(Kek::from_base64("not base64!").is_err());
        assert!(Kek::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        assert!(Kek::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
    }

    #[test]
    fn generated_key_file_is_reused_on_the_next_start() {
        let dir = std::env::temp_dir().join(format!("latchkey-kek-{}", uuid::Uuid::now_v7()));
        let (first, source) = Kek::load(None, &dir).unwrap();
        assert_eq!(source, KekSource::GeneratedFile);
        let (second, source) = Kek::load(None, &dir).unwrap();
        assert_eq!(source, KekSource::ExistingFile);
        assert_eq!(first.0, second.0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
