//! One error type for the domain, and the small vocabulary of machine codes
//! both transports map from. Adding a variant does not compile until
//! [`AuthError::code`] and every transport's match on [`ErrorCode`] decide
//! what it means.

use std::fmt;

/// Everything a domain operation can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; nothing was changed. `field` is the request
    /// field at fault, with proto field names (`email`, `client.ip`).
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// Wrong, expired, already used or unknown code or session: deliberately
    /// indistinguishable.
    #[error("the code is invalid or has expired")]
    CodeInvalid,
    /// The session saw too many wrong codes and has ended.
    #[error("too many wrong codes: this login has ended, start a new one")]
    TooManyAttempts,
    /// Unknown, expired or revoked refresh token, or its session has ended.
    #[error("the refresh token is invalid or has expired")]
    RefreshTokenInvalid,
    /// An already rotated refresh token was presented after the grace window:
    /// the session has been ended.
    #[error("this refresh token was already used: the session has been ended")]
    RefreshTokenReused,
    /// The validation URL is not on the tenant's allowlist (or not an
    /// acceptable URL at all); nothing was sent.
    #[error("validation_url {0}")]
    ValidationUrlNotAllowed(&'static str),
    /// Too many calls: a rate limit or the wrong-code budget. Retry after
    /// the given time.
    #[error("too many requests: retry in {} s", .0.as_secs().max(1))]
    RateLimited(std::time::Duration),
    /// An idempotency key came back with a different request.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// No valid API key: missing, malformed, unknown, expired or revoked
    /// (deliberately indistinguishable).
    #[error("a valid API key is required: send `authorization: Bearer <key>`")]
    Unauthenticated,
    /// A valid key without the right scope (an app key on the admin surface).
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The user is disabled: no login, no refresh.
    #[error("this user is disabled")]
    UserDisabled,
    /// An admin operation names something that does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An admin operation would create something that exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The access token presented for a user is not valid now: not one of
    /// the tenant's, expired, or its session ended.
    #[error("the access token is invalid or has expired")]
    AccessTokenInvalid,
    /// Passkeys are off for the tenant (no relying-party id).
    #[error("passkeys are not configured for this tenant")]
    PasskeysNotConfigured,
    /// Unknown, expired or already finished passkey ceremony (another
    /// tenant's is unknown): deliberately indistinguishable.
    #[error("the passkey ceremony is unknown, expired or already finished: start a new one")]
    PasskeyCeremonyInvalid,
    /// The passkey's answer did not verify (signature, origin, relying
    /// party, user verification, an unknown or another account's passkey).
    #[error("the passkey could not be verified")]
    PasskeyInvalid,
    /// The passkey's signature counter went backwards: it may have been
    /// cloned. Refused, recorded, and refused from now on.
    #[error(
        "this passkey's signature counter went backwards (it may be cloned): it is refused; sign in by email and register a new one"
    )]
    PasskeyCounterRegressed,
    /// The user has no passkey with that id.
    #[error("passkey not found")]
    PasskeyNotFound,
    /// The database could not be reached; safe to retry.
    #[error("the service is temporarily unavailable, retry later")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected failure; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AuthError {
    /// An [`AuthError::InvalidArgument`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The machine code callers see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::CodeInvalid => ErrorCode::CodeInvalid,
            Self::TooManyAttempts => ErrorCode::TooManyAttempts,
            Self::RefreshTokenInvalid => ErrorCode::RefreshTokenInvalid,
            Self::RefreshTokenReused => ErrorCode::RefreshTokenReused,
            Self::ValidationUrlNotAllowed(_) => ErrorCode::ValidationUrlNotAllowed,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::UserDisabled => ErrorCode::UserDisabled,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::AccessTokenInvalid => ErrorCode::AccessTokenInvalid,
            Self::PasskeysNotConfigured => ErrorCode::PasskeysNotConfigured,
            Self::PasskeyCeremonyInvalid => ErrorCode::PasskeyCeremonyInvalid,
            Self::PasskeyInvalid => ErrorCode::PasskeyInvalid,
            Self::PasskeyCounterRegressed => ErrorCode::PasskeyCounterRegressed,
            Self::PasskeyNotFound => ErrorCode::PasskeyNotFound,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Logs what callers are never shown: the cause of internal and
    /// unavailable errors. Every transport calls this once per error.
    pub fn log(&self) {
        match self {
            Self::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
            }
            Self::Unavailable(cause) => {
                crate::telemetry::DATABASE.failed(&format!("{cause:#}"));
            }
            _ => {}
        }
    }

    /// What happened, for the log: the whole cause chain of internal and
    /// unavailable errors (whose caller-facing text hides it).
    pub fn cause_chain(&self) -> String {
        match self {
            Self::Internal(cause) | Self::Unavailable(cause) => format!("{cause:#}"),
            other => other.to_string(),
        }
    }

    /// How long to wait before retrying, for rate limits.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited(d) => Some(*d),
            _ => None,
        }
    }

    /// The field at fault, for bad input.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidArgument { field, .. } => Some(field),
            Self::ValidationUrlNotAllowed(_) => Some("validation_url"),
            Self::IdempotencyKeyReused => Some("idempotency_key"),
            _ => None,
        }
    }
}

/// The stable, machine-readable error codes (the `reason` of the gRPC
/// `ErrorInfo` detail). Documented in the README; never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    CodeInvalid,
    TooManyAttempts,
    RefreshTokenInvalid,
    RefreshTokenReused,
    ValidationUrlNotAllowed,
    RateLimited,
    IdempotencyKeyReused,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Unavailable,
    Internal,
    AccessTokenInvalid,
    PasskeysNotConfigured,
    PasskeyCeremonyInvalid,
    PasskeyInvalid,
    PasskeyCounterRegressed,
    PasskeyNotFound,
    UserDisabled,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 21] = [
        Self::InvalidArgument,
        Self::CodeInvalid,
        Self::TooManyAttempts,
        Self::RefreshTokenInvalid,
        Self::RefreshTokenReused,
        Self::ValidationUrlNotAllowed,
        Self::RateLimited,
        Self::IdempotencyKeyReused,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Unavailable,
        Self::Internal,
        Self::AccessTokenInvalid,
        Self::PasskeysNotConfigured,
        Self::PasskeyCeremonyInvalid,
        Self::PasskeyInvalid,
        Self::PasskeyCounterRegressed,
        Self::PasskeyNotFound,
        Self::UserDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::CodeInvalid => "CODE_INVALID",
            Self::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            Self::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            Self::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Self::ValidationUrlNotAllowed => "VALIDATION_URL_NOT_ALLOWED",
            Self::RateLimited => "RATE_LIMITED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::AccessTokenInvalid => "ACCESS_TOKEN_INVALID",
            Self::PasskeysNotConfigured => "PASSKEYS_NOT_CONFIGURED",
            Self::PasskeyCeremonyInvalid => "PASSKEY_CEREMONY_INVALID",
            Self::PasskeyInvalid => "PASSKEY_INVALID",
            Self::PasskeyCounterRegressed => "PASSKEY_COUNTER_REGRESSED",
            Self::PasskeyNotFound => "PASSKEY_NOT_FOUND",
            Self::UserDisabled => "USER_DISABLED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::store::StoreError> for AuthError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.into())
        } else {
            Self::Internal(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_documents_every_error_code() {
        let readme = include_str!("../README.md");
        for code in ErrorCode::ALL {
            assert!(
                readme.contains(&format!("| `{code}` |")),
                "README misses {code}"
            );
        }
    }

    /// The proto's `ErrorReason` (what generated clients match on), the
    /// codes the server sends and the README's error table list the same
    /// reasons: each enum value is `ERROR_REASON_` + a reason.
    #[test]
    fn the_error_reason_enum_the_codes_and_the_readme_table_agree() {
        use crate::proto::ErrorReason;
        use std::collections::BTreeSet;

        let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len(), "a code is listed twice");

        let unspecified = ErrorReason::Unspecified as i32;
        let in_enum: BTreeSet<&str> = (0..1000)
            .filter(|&n| n != unspecified)
            .filter_map(|n| ErrorReason::try_from(n).ok())
            .map(|r| {
                r.as_str_name()
                    .strip_prefix("ERROR_REASON_")
                    .expect("every ErrorReason value starts with ERROR_REASON_")
            })
            .collect();
        assert_eq!(in_enum, codes, "proto ErrorReason vs ErrorCode::ALL");

        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Errors\n")
            .nth(1)
            .expect("README has an Errors section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let in_table: BTreeSet<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert_eq!(in_table, codes, "README error table vs ErrorCode::ALL");
    }
}
