//! Email addresses as latchkey identifies users by them.
//!
//! One mailbox is one identity. [`EmailAddress::parse`] turns what a caller
//! typed into the address's one canonical form, which is what users, rate
//! limits, wrong-code budgets, sessions and the outbox store (the rule is
//! stated in docs/guarantees.md, "One mailbox, one identity"):
//!
//! - surrounding whitespace is removed;
//! - the local part is case-insensitive (lower-cased, as every major mail
//!   and identity provider treats it);
//! - a quoted local part is unquoted, and quoted-pairs unescaped
//!   (`"al\ice"` is `alice`); a local part that would still need quotes
//!   after that (`"a<b>c"`, `"a..b"`) is refused: no mail path delivers it
//!   reliably;
//! - the domain is IDNA-normalised to lower-case ASCII (`Bücher.example` is
//!   `xn--bcher-kva.example`); address literals (`[127.0.0.1]`) are refused;
//! - invisible characters (soft hyphen, zero-width and direction marks, word
//!   joiner, byte-order mark, variation selectors, tags) and full-width forms
//!   are refused, never silently dropped: they make one address look like
//!   another.
//!
//! The result also passes the `email_address` crate's RFC 5321/5322 checks,
//! the ones the mail transport (lettre) applies to a recipient, so an address
//! StartAuth accepts is one the outbox can send to. The outbox builds its
//! recipient with [`EmailAddress::parse`] too: StartAuth and the mail path
//! share one validation, and the domain holds no transport type.

use std::fmt;

use crate::error::AuthError;

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

const LIKE_NAME_AT_EXAMPLE: &str = "must be an address like name@example.com";

/// A valid email address in its canonical form.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates `input` (the `email` request field) and returns its
    /// canonical form.
    pub fn parse(input: &str) -> Result<Self, AuthError> {
        let invalid = |reason: &str| AuthError::invalid("email", reason);
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("is required"));
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(invalid("must be at most 254 characters"));
        }
        if trimmed.chars().any(is_invisible_or_full_width) {
            return Err(invalid(
                "must not contain invisible characters (soft hyphens, zero-width or \
                 direction marks) or full-width forms",
            ));
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(invalid(LIKE_NAME_AT_EXAMPLE));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(invalid(LIKE_NAME_AT_EXAMPLE));
        }
        let local = canonical_local_part(local).map_err(invalid)?;
        let domain = canonical_domain(domain).map_err(invalid)?;
        if local.len() > MAX_LOCAL_LEN {
            return Err(invalid("the part before @ must be at most 64 characters"));
        }
        if local.len() + 1 + domain.len() > MAX_EMAIL_LEN {
            return Err(invalid("must be at most 254 characters"));
        }
        // The checks the mail transport applies to a recipient: what it would
        // refuse is refused here, before anything is stored.
        if !email_address::EmailAddress::is_valid_local_part(&local)
            || !email_address::EmailAddress::is_valid_domain(&domain)
        {
            return Err(invalid(LIKE_NAME_AT_EXAMPLE));
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the last `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The domain, in lower-case ASCII.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// A form safe for logs: first character of the local part and the domain.
    pub fn masked(&self) -> String {
        mask(self.as_str())
    }
}

/// The canonical form of a stored address (written by an older release),
/// or `None` when it is no longer accepted. For the data migration.
pub fn canonical(stored: &str) -> Option<String> {
    EmailAddress::parse(stored)
        .ok()
        .map(|e| e.as_str().to_owned())
}

/// Characters that make one address look like another: invisible ones
/// (which IDNA would silently drop from a domain) and full-width forms.
fn is_invisible_or_full_width(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                     // soft hyphen
        | '\u{034F}'                   // combining grapheme joiner
        | '\u{061C}'                   // Arabic letter mark
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'       // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'       // Mongolian selectors, vowel separator
        | '\u{200B}'..='\u{200F}'       // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'       // bidi isolates, deprecated format chars
        | '\u{FE00}'..='\u{FE0F}'       // variation selectors
        | '\u{FEFF}'                   // byte-order mark
        | '\u{FF01}'..='\u{FF5E}'       // full-width ASCII forms
        | '\u{1D173}'..='\u{1D17A}'     // musical formatting
        | '\u{E0000}'..='\u{E0FFF}' // tags, variation selectors supplement
    )
}

/// RFC 5322 `atext` (and RFC 6531 non-ASCII).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// RFC 5322 `dot-atom-text`: atext runs separated by single dots.
fn is_dot_atom(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext))
}

/// The local part unquoted and lower-cased.
fn canonical_local_part(local: &str) -> Result<String, &'static str> {
    let unquoted = match local.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"').ok_or(LIKE_NAME_AT_EXAMPLE)?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or(LIKE_NAME_AT_EXAMPLE)?),
                    '"' => return Err(LIKE_NAME_AT_EXAMPLE),
                    c => out.push(c),
                }
            }
            if !is_dot_atom(&out) {
                return Err(
                    "a quoted part before @ is accepted only when it needs no quotes \
                     (letters, digits, dots and !#$%&'*+-/=?^_`{|}~)",
                );
            }
            out
        }
        None if is_dot_atom(local) => local.to_owned(),
        None => return Err(LIKE_NAME_AT_EXAMPLE),
    };
    Ok(unquoted.to_lowercase())
}

/// The domain in lower-case ASCII (IDNA, UTS #46 with STD3 rules).
fn canonical_domain(domain: &str) -> Result<String, &'static str> {
    if domain.starts_with('[') {
        return Err("the part after @ must be a domain name, not an address literal");
    }
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| LIKE_NAME_AT_EXAMPLE)?;
    if ascii.is_empty() {
        return Err(LIKE_NAME_AT_EXAMPLE);
    }
    if !ascii.contains('.') && ascii != "localhost" {
        return Err("the domain must contain a dot, like example.com");
    }
    Ok(ascii)
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
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_of(input: &str) -> String {
        EmailAddress::parse(input)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn every_spelling_of_one_mailbox_has_one_canonical_form() {
        for spelling in [
            "alice@example.com",
            "  Alice@Example.COM \n",
            "ALICE@EXAMPLE.COM",
            "\"alice\"@example.com",
            "\"al\\ice\"@example.com",
            "\"\\A\\L\\I\\C\\E\"@example.com",
        ] {
            assert_eq!(canonical_of(spelling), "alice@example.com", "{spelling:?}");
        }
        assert_eq!(
            canonical_of("\"first.last\"@example.com"),
            "first.last@example.com"
        );
        assert_eq!(
            canonical_of("bob@Bücher.Example"),
            "bob@xn--bcher-kva.example"
        );
        assert_eq!(
            canonical_of("bob@xn--BCHER-kva.example"),
            "bob@xn--bcher-kva.example"
        );
        assert_eq!(canonical_of("José@example.com"), "josé@example.com");
    }

    #[test]
    fn the_canonical_form_is_stable_and_the_mail_transport_sends_to_it() {
        use lettre::message::Mailbox;
        for input in [
            "Alice@example.com",
            "\"o'brien\"@example.com",
            "a.b+tag@mail.example.org",
            "x!#$%&'*+-/=?^_`{|}~@example.com",
            "bob@Bücher.example",
            "dev@localhost",
        ] {
            let canonical = canonical_of(input);
            assert_eq!(canonical_of(&canonical), canonical, "{input:?}");
            assert_eq!(super::canonical(&canonical).as_deref(), Some(&*canonical));
            let mailbox: Mailbox = canonical
                .parse()
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(mailbox.email.to_string(), canonical);
            let email = EmailAddress::parse(&canonical).unwrap();
            let parts = lettre::Address::new(email.local_part(), email.domain())
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parts.to_string(), canonical);
        }
    }

    #[test]
    fn unsendable_and_look_alike_addresses_are_refused() {
        for bad in [
            "alice@[127.0.0.1]",
            "alice@[IPv6:::1]",
            "\"a<b>c\"@example.com",
            "\"a@b\"@example.com",
            "\"a..b\"@example.com",
            "\".alice\"@example.com",
            "\"al\"ice\"@example.com",
            "\"alice@example.com",
            "a\"lice\"@example.com",
            "alice@example.com.",
            "alice@-example.com",
            "alice@exa_mple.com",
            "al\u{AD}ice@example.com",
            "alice@exam\u{AD}ple.com",
            "al\u{200B}ice@example.com",
            "alice\u{200C}@example.com",
            "ali\u{200D}ce@example.com",
            "alice@example\u{2060}.com",
            "\u{FEFF}alice@example.com",
            "ali\u{202E}ecil@example.com",
            "alice\u{200F}@example.com",
            "alice@exa\u{2066}mple.com",
            "alice\u{FE0F}@example.com",
            "\u{FF41}lice@example.com",
            "alice@\u{FF45}xample.com",
            "alice\u{FF20}example.com",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("email"), "{bad:?}");
        }
        assert_eq!(super::canonical("alice@[127.0.0.1]"), None);
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
