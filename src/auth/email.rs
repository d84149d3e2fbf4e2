//! Email addresses as latchkey identifies users by them.
//!
//! Normalisation rule (documented in the README): surrounding whitespace is
//! removed and the domain (after the last `@`) is lower-cased; the local part
//! is kept exactly as given, because RFC 5321 lets mail servers treat it as
//! case-sensitive. Two inputs that normalise to the same text are the same
//! user of a tenant.

use std::fmt;

use crate::error::AuthError;

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A syntactically valid, normalised email address.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates and normalises `input` (the `email` request field).
    pub fn parse(input: &str) -> Result<Self, AuthError> {
        let invalid = |reason: &str| AuthError::invalid("email", reason);
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("is required"));
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(invalid("must be at most 254 characters"));
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(invalid("must be an address like name@example.com"));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(invalid("must be an address like name@example.com"));
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(invalid("the part before @ must be at most 64 characters"));
        }
        let domain = domain.to_lowercase();
        // lettre's address grammar is what the SMTP transport will accept, so
        // an address that passes here can always be sent to.
        if lettre::Address::new(local, &domain).is_err() {
            return Err(invalid("must be an address like name@example.com"));
        }
        if !domain.contains('.') && !domain.starts_with('[') && domain != "localhost" {
            return Err(invalid("the domain must contain a dot, like example.com"));
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A form safe for logs: first character of the local part and the domain.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks an address for logs: `a***@example.com`.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks every address-like word in a text from outside (a mail server's
/// error message: `550 5.1.1 <alice@example.com>: Recipient address
/// rejected`), so it can be logged, stored and traced.
pub fn mask_addresses(text: &str) -> String {
    let is_delimiter = |c: char| c.is_whitespace() || "<>()[],;:\"'".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str(&mask(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_delimiter(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_trimmed_and_only_the_domain_is_lower_cased() {
        let e = EmailAddress::parse("  Alice.Smith@Example.COM \n").unwrap();
        assert_eq!(e.as_str(), "Alice.Smith@example.com");
    }

    #[test]
    fn plus_addressing_and_subdomains_are_kept() {
        let e = EmailAddress::parse("bob+tag@Mail.Example.org").unwrap();
        assert_eq!(e.as_str(), "bob+tag@mail.example.org");
    }

    #[test]
    fn malformed_addresses_are_rejected_naming_the_field() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "alice@",
            "alice@@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@example",
            "alice\r\nBcc: x@example.com@example.com",
            "<alice@example.com>",
            "alice@example.com>",
            "a,b@example.com",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("email"), "{bad:?}");
        }
    }

    #[test]
    fn over_long_addresses_are_rejected() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long_local).is_err());
        let long_total = format!("a@{}.com", "b".repeat(250));
        assert!(EmailAddress::parse(&long_total).is_err());
        let just_fits = format!("{}@{}.com", "a".repeat(64), "b".repeat(60));
        assert!(EmailAddress::parse(&just_fits).is_ok());
    }

    #[test]
    fn masked_form_hides_the_local_part() {
        let e = EmailAddress::parse("alice@example.com").unwrap();
        assert_eq!(e.masked(), "a***@example.com");
        assert!(!format!("{e:?}").contains("alice"));
    }

    #[test]
    fn addresses_in_a_servers_message_are_masked() {
        assert_eq!(
            mask_addresses("550 5.1.1 <alice@example.com>: Recipient address rejected"),
            "550 5.1.1 <a***@example.com>: Recipient address rejected"
        );
        assert_eq!(
            mask_addresses("to bob.smith@corp.example, \"carol@x.test\""),
            "to b***@corp.example, \"c***@x.test\""
        );
        assert_eq!(mask_addresses("421 try later"), "421 try later");
    }
}
