//! A tenant's relying party: which site its passkeys are bound to (the
//! relying-party id) and which pages may use them (the origins). Origins are checked like validation URLs: parsed, https unless the host
//! is loopback, no user info. Passkeys always verify their user (PIN or
//! biometrics): webauthn-rs's passkey ceremonies require it, which is what
//! makes a passkey alone a complete login.

use std::time::Duration;

use url::Url;
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::error::AuthError;

/// How long a ceremony lasts, and the timeout browsers are given.
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);

/// A tenant's passkey rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasskeyPolicy {
    /// The relying-party id; `None`: passkeys are off.
    pub rp_id: Option<String>,
    /// The name browsers show; `None`: the app name.
    pub rp_name: Option<String>,
    /// The pages' origins. Empty: `https://<rp id>`, or for `localhost`
    /// any `http://localhost:<port>` (development).
    pub origins: Vec<Url>,
}

/// A relying-party id: a lower-case domain name without scheme, port or
/// path (`example.com`, `localhost`).
pub fn check_rp_id(v: &str) -> Result<String, String> {
    let bad = || "must be a domain name like `example.com` (no scheme, port or path)".to_owned();
    if v.is_empty() || v.len() > 253 || v != v.trim() {
        return Err(bad());
    }
    match url::Host::parse(v) {
        Ok(url::Host::Domain(d)) if d == v && !d.starts_with('.') && !d.ends_with('.') => Ok(d),
        _ => Err(bad()),
    }
}

/// A page origin: `scheme://host[:port]`, https unless loopback.
pub fn check_origin(v: &str) -> Result<Url, String> {
    let url = crate::auth::links::acceptable(v).map_err(|r| format!("{v:?} {r}"))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{v:?} must be an origin like `https://app.example.com` (no path, query or fragment)"
        ));
    }
    if url.domain().is_none() {
        return Err(format!(
            "{v:?} must name its host by domain, not by address"
        ));
    }
    Ok(url)
}

/// Origins, at most 20.
pub fn check_origins(v: &[String]) -> Result<Vec<Url>, String> {
    if v.len() > 20 {
        return Err("at most 20 entries".into());
    }
    v.iter().map(|o| check_origin(o)).collect()
}

/// Whether `origin`'s host is the relying-party id or under it.
fn within(rp_id: &str, origin: &Url) -> bool {
    origin
        .domain()
        .is_some_and(|d| d == rp_id || d.ends_with(&format!(".{rp_id}")))
}

impl PasskeyPolicy {
    /// Checks the settings together: every origin lies within the
    /// relying-party id (browsers refuse the others anyway).
    pub fn check(&self) -> Result<(), String> {
        if let Some(rp_id) = &self.rp_id
            && let Some(outside) = self.origins.iter().find(|o| !within(rp_id, o))
        {
            return Err(format!(
                "{:?} is not within the relying-party id {rp_id:?}",
                outside.as_str().trim_end_matches('/')
            ));
        }
        Ok(())
    }

    /// The relying party for the tenant's ceremonies.
    pub fn relying_party(&self, app_name: &str) -> Result<Webauthn, AuthError> {
        let rp_id = self
            .rp_id
            .as_deref()
            .ok_or(AuthError::PasskeysNotConfigured)?;
        let (first, rest, any_port) = match self.origins.split_first() {
            Some((first, rest)) => (first.clone(), rest, false),
            None if rp_id == "localhost" => (local_origin(), &[][..], true),
            None => (https_origin(rp_id)?, &[][..], false),
        };
        let mut builder = WebauthnBuilder::new(rp_id, &first)
            .map_err(|e| internal("relying party", e))?
            .rp_name(self.rp_name.as_deref().unwrap_or(app_name))
            .allow_any_port(any_port)
            .timeout(CEREMONY_TTL);
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        builder.build().map_err(|e| internal("relying party", e))
    }
}

fn local_origin() -> Url {
    Url::parse("http://localhost").expect("a valid URL")
}

fn https_origin(rp_id: &str) -> Result<Url, AuthError> {
    Url::parse(&format!("https://{rp_id}")).map_err(|e| internal("origin", e))
}

fn internal(what: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(anyhow::anyhow!("passkeys: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_ids_are_bare_domains() {
        assert_eq!(check_rp_id("example.com").unwrap(), "example.com");
        assert_eq!(check_rp_id("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "Example.com",
            "https://example.com",
            "example.com:443",
            "example.com/x",
            "127.0.0.1",
            " example.com",
            "user@example.com",
        ] {
            assert!(check_rp_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_checked_like_validation_urls() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        for bad in [
            "http://app.example.com",
            "https://app.example.com/login",
            "https://user@app.example.com",
            "https://app.example.com?x=1",
            "javascript:alert(1)",
            "https://127.0.0.1",
        ] {
            assert!(check_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_must_lie_within_the_relying_party_id() {
        let policy = |origins: &[&str]| PasskeyPolicy {
            rp_id: Some("example.com".into()),
            origins: origins.iter().map(|o| check_origin(o).unwrap()).collect(),
            ..PasskeyPolicy::default()
        };
        assert!(
            policy(&["https://example.com", "https://login.example.com"])
                .check()
                .is_ok()
        );
        assert!(policy(&["https://example.com.evil.test"]).check().is_err());
        assert!(policy(&["https://notexample.com"]).check().is_err());
    }

    #[test]
    fn without_a_relying_party_id_passkeys_are_off() {
        let off = PasskeyPolicy::default();
        assert!(matches!(
            off.relying_party("app"),
            Err(AuthError::PasskeysNotConfigured)
        ));
    }
}
