//! Parsing the plain values of requests (ids, addresses, keys).

use std::net::IpAddr;

use super::MAX_USER_AGENT_LEN;
use crate::error::AuthError;

pub(super) fn parse_uuid(text: &str, field: &'static str) -> Result<String, AuthError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AuthError::invalid(field, "is required"));
    }
    // Session and user ids are hyphenated UUIDs (any case); compare them
    // canonically.
    uuid::Uuid::try_parse(text)
        .ok()
        .filter(|_| text.len() == 36)
        .map(|id| id.to_string())
        .ok_or_else(|| AuthError::invalid(field, "is not a valid id (a UUID)"))
}

pub(super) fn parse_idempotency_key(text: Option<&str>) -> Result<Option<&str>, AuthError> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    if text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::invalid(
            "idempotency_key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(text))
}

/// SHA-256 over length-prefixed parts (no two requests share one).
pub(super) fn request_fingerprint(parts: &[&str]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

pub(super) fn parse_client_ip(text: Option<&str>) -> Result<Option<IpAddr>, AuthError> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    text.parse::<IpAddr>()
        .map(Some)
        .map_err(|_| AuthError::invalid("client.ip", "must be an IPv4 or IPv6 address"))
}

pub(super) fn parse_user_agent(text: Option<&str>) -> Result<Option<&str>, AuthError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if text.chars().count() > MAX_USER_AGENT_LEN {
        return Err(AuthError::invalid(
            "client.user_agent",
            "must be at most 512 characters",
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "client.user_agent",
            "must not contain control characters",
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_must_be_uuids_and_are_canonicalised() {
        let id = uuid::Uuid::now_v7();
        let upper = id.to_string().to_uppercase();
        assert_eq!(parse_uuid(&upper, "session_id").unwrap(), id.to_string());
        let simple = id.simple().to_string();
        for bad in ["", "abc", "'; DROP TABLE users; --", simple.as_str()] {
            assert_eq!(
                parse_uuid(bad, "session_id").unwrap_err().field(),
                Some("session_id")
            );
        }
    }

    #[test]
    fn client_ip_is_optional_but_must_be_an_address() {
        assert_eq!(parse_client_ip(None).unwrap(), None);
        assert_eq!(
            parse_client_ip(Some(" ::1 ")).unwrap(),
            Some(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(
            parse_client_ip(Some("203.0.113.9")).unwrap(),
            Some(IpAddr::from([203, 0, 113, 9]))
        );
        assert!(parse_client_ip(Some("example.com")).is_err());
    }

    #[test]
    fn user_agent_is_limited_in_length_and_characters() {
        assert_eq!(parse_user_agent(None).unwrap(), None);
        assert!(parse_user_agent(Some(&"x".repeat(512))).is_ok());
        assert!(parse_user_agent(Some(&"x".repeat(513))).is_err());
        assert!(parse_user_agent(Some("evil\nheader")).is_err());
    }
}
