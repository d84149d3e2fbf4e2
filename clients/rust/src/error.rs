//! The details latchkey puts on every error status, decoded.

use std::time::Duration;

use tonic::Status;
use tonic_types::StatusExt;

use crate::proto::ErrorReason;

/// `reason`, `retry_after` and `field` of a failed call, read from the
/// status details (`google.rpc.ErrorInfo`, `RetryInfo`, `BadRequest`):
///
/// ```no_run
/// # async fn run(mut client: latchkey_client::Client, session_id: String) {
/// use latchkey_client::{StatusDetails, proto::{ErrorReason, VerifyRequest}};
///
/// let request = VerifyRequest { session_id, code: "000000".into(), ..Default::default() };
/// if let Err(status) = client.auth.verify(request).await {
///     if status.error_reason() == Some(ErrorReason::CodeInvalid) { /* ask again */ }
///     if let Some(wait) = status.retry_after() { /* come back after `wait` */ }
/// }
/// # }
/// ```
pub trait StatusDetails {
    /// The stable reason code: `CODE_INVALID`, `RATE_LIMITED`, … (the
    /// [`ErrorReason`] value names without `ERROR_REASON_`). `None` when the
    /// status carries no `ErrorInfo`, such as a connection failure
    /// (`Code::Unavailable`).
    fn reason(&self) -> Option<String>;
    /// The reason as the proto's [`ErrorReason`] (`None` for a reason this
    /// client does not know yet: a newer server may add some).
    fn error_reason(&self) -> Option<ErrorReason>;
    /// How long a rate limit asks to wait before trying again.
    fn retry_after(&self) -> Option<Duration>;
    /// The request field at fault, for bad input (`email`, `client.ip`).
    fn field(&self) -> Option<String>;
}

impl StatusDetails for Status {
    fn reason(&self) -> Option<String> {
        self.get_details_error_info().map(|info| info.reason)
    }

    fn error_reason(&self) -> Option<ErrorReason> {
        ErrorReason::from_str_name(&format!("ERROR_REASON_{}", self.reason()?))
    }

    fn retry_after(&self) -> Option<Duration> {
        self.get_details_retry_info()?.retry_delay
    }

    fn field(&self) -> Option<String> {
        if let Some(field) = self
            .get_details_error_info()
            .and_then(|mut info| info.metadata.remove("field"))
        {
            return Some(field);
        }
        let violations = self.get_details_bad_request()?.field_violations;
        violations.into_iter().next().map(|v| v.field)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn the_details_latchkey_sends_are_decoded() {
        let mut details = ErrorDetails::new();
        details.set_error_info("RATE_LIMITED", "latchkey", HashMap::new());
        details.set_retry_info(Some(Duration::from_secs(42)));
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        assert_eq!(status.reason().as_deref(), Some("RATE_LIMITED"));
        assert_eq!(status.error_reason(), Some(ErrorReason::RateLimited));
        assert_eq!(status.retry_after(), Some(Duration::from_secs(42)));
        assert_eq!(status.field(), None);

        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("email", "not an address");
        details.set_error_info("INVALID_ARGUMENT", "latchkey", HashMap::new());
        let status = Status::with_error_details(Code::InvalidArgument, "email", details);
        assert_eq!(status.field().as_deref(), Some("email"));
        assert_eq!(status.error_reason(), Some(ErrorReason::InvalidArgument));
    }

    #[test]
    fn a_status_without_details_has_none() {
        let status = Status::unavailable("connection refused");
        assert_eq!(status.reason(), None);
        assert_eq!(status.error_reason(), None);
        assert_eq!(status.retry_after(), None);
        assert_eq!(status.field(), None);
        // A reason this client does not know is still readable as a string.
        let mut details = ErrorDetails::new();
        details.set_error_info("SOMETHING_NEW", "latchkey", HashMap::new());
        let status = Status::with_error_details(Code::Internal, "new", details);
        assert_eq!(status.reason().as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(status.error_reason(), None);
    }
}
