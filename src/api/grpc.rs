//! The gRPC adapter: `latchkey.v1.AuthService` over [`Api`], and the mapping
//! of machine codes to gRPC statuses with rich error details.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Request, Response, Status, server::NamedService};
use tonic_types::{ErrorDetails, StatusExt};

use super::Api;
use crate::{
    auth::{apikeys::Scope, tenants::Tenant},
    error::{AuthError, ErrorCode},
    proto::{self, auth_service_server},
};

/// The `domain` of every `google.rpc.ErrorInfo` latchkey returns.
pub const ERROR_DOMAIN: &str = "latchkey";

/// Largest request message accepted (bytes), on both transports.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The tonic service for [`Api`].
pub struct GrpcAuth {
    api: Api,
}

impl GrpcAuth {
    /// The tonic service, behind the API-key check, with the request size
    /// limit applied.
    pub fn server(api: Api) -> Authenticated<auth_service_server::AuthServiceServer<Self>> {
        let server = auth_service_server::AuthServiceServer::new(Self { api: api.clone() })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        Authenticated::new(
            server,
            api,
            Scope::App,
            &["/latchkey.v1.AuthService/GetJwks"],
        )
    }
}

/// Checks the caller's API key before a call of the wrapped service is read,
/// and hands the caller's tenant to the handler (a request extension).
/// Paths in `public` need no key.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    api: Api,
    scope: Scope,
    public: &'static [&'static str],
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, api: Api, scope: Scope, public: &'static [&'static str]) -> Self {
        Self {
            inner,
            api,
            scope,
            public,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !self.public.contains(&request.uri().path()) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match self.api.caller(header, self.scope) {
                Ok(tenant) => {
                    tracing::Span::current().record("tenant", tenant.id.as_str());
                    request.extensions_mut().insert(tenant);
                }
                Err(e) => {
                    let response = status(e).into_http();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// The caller's tenant, put there by [`Authenticated`].
pub fn tenant<T>(request: &Request<T>) -> Result<Arc<Tenant>, Status> {
    request
        .extensions()
        .get::<Arc<Tenant>>()
        .cloned()
        .ok_or_else(|| status(AuthError::Unauthenticated))
}

pub fn reply<T>(result: Result<T, AuthError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(status)
}

impl GrpcAuth {
    /// Public: the named tenant's keys; without a name, the tenant of the
    /// API key sent (a key, if sent, must be valid), else the default
    /// tenant's.
    async fn jwks(
        &self,
        request: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::GetJwksResponse>, Status> {
        let named = request.get_ref().tenant_id.trim().to_owned();
        let tenant_id = match request.metadata().get("authorization") {
            _ if !named.is_empty() => named,
            None => crate::auth::DEFAULT_TENANT.to_owned(),
            Some(header) => {
                let caller = self.api.caller(header.to_str().ok(), Scope::App);
                caller.map_err(status)?.id.clone()
            }
        };
        let jwks = self.api.get_jwks(&tenant_id).await.map_err(status)?;
        Ok(Response::new(jwks.as_ref().clone()))
    }
}

/// The service: one method per row of [`crate::gateway_rpcs!`], each calling
/// the same-named [`Api`] method for the caller's tenant, plus GetJwks.
macro_rules! auth_service {
    ($($method:ident $rpc:ident($req:ident) -> $resp:ident at $path:literal
        also [$($status:literal),*] $(with $hook:path)?;)+) => {
        #[tonic::async_trait]
        impl auth_service_server::AuthService for GrpcAuth {
            $(async fn $method(
                &self,
                request: Request<proto::$req>,
            ) -> Result<Response<proto::$resp>, Status> {
                let tenant = tenant(&request)?;
                reply(self.api.$method(&tenant, request.into_inner()).await)
            })+

            /// Public: see `GrpcAuth::jwks`.
            async fn get_jwks(
                &self,
                request: Request<proto::GetJwksRequest>,
            ) -> Result<Response<proto::GetJwksResponse>, Status> {
                self.jwks(request).await
            }
        }
    };
}

crate::gateway_rpcs!(auth_service);

/// Tonic refuses a request larger than [`MAX_REQUEST_BYTES`] while decoding
/// it, with OUT_OF_RANGE and no details. This response mapper (a layer on the
/// whole server) turns that into the same INVALID_ARGUMENT every other bad
/// input gets, naming the field `request`.
pub fn oversized_request_as_invalid_argument<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers();
    let oversized = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("decoded"));
    if oversized {
        let replacement = status(AuthError::invalid(
            "request",
            format!(
                "the request is larger than {} KiB",
                MAX_REQUEST_BYTES / 1024
            ),
        ));
        let headers = response.headers_mut();
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        if replacement.add_header(headers).is_err() {
            tracing::warn!("could not rewrite an oversized-request status");
        }
    }
    response
}

/// The gRPC status code for each machine code. Exhaustive on purpose: a new
/// code does not compile until it is decided here.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::CodeInvalid => tonic::Code::Unauthenticated,
        ErrorCode::TooManyAttempts => tonic::Code::PermissionDenied,
        ErrorCode::RefreshTokenInvalid => tonic::Code::Unauthenticated,
        ErrorCode::RefreshTokenReused => tonic::Code::Unauthenticated,
        ErrorCode::ValidationUrlNotAllowed => tonic::Code::InvalidArgument,
        ErrorCode::RateLimited => tonic::Code::ResourceExhausted,
        ErrorCode::IdempotencyKeyReused => tonic::Code::InvalidArgument,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::AccessTokenInvalid => tonic::Code::Unauthenticated,
        ErrorCode::PasskeysNotConfigured => tonic::Code::FailedPrecondition,
        ErrorCode::PasskeyCeremonyInvalid => tonic::Code::Unauthenticated,
        ErrorCode::PasskeyInvalid => tonic::Code::Unauthenticated,
        ErrorCode::PasskeyCounterRegressed => tonic::Code::PermissionDenied,
        ErrorCode::PasskeyNotFound => tonic::Code::NotFound,
        ErrorCode::UserDisabled => tonic::Code::PermissionDenied,
    }
}

/// A domain error as a gRPC status with `google.rpc.ErrorInfo` (reason = the
/// machine code) and, for bad arguments, `google.rpc.BadRequest`. Internal
/// causes are logged (by [`AuthError::log`]) and never sent.
pub fn status(error: AuthError) -> Status {
    error.log();
    let code = error.code();
    let message = error.to_string();
    let mut details = ErrorDetails::new();
    let mut metadata = std::collections::HashMap::new();
    if let Some(field) = error.field() {
        metadata.insert("field".to_owned(), field.to_owned());
        details.add_bad_request_violation(field, message.clone());
    }
    if let Some(wait) = error.retry_after() {
        details.set_retry_info(Some(wait));
    }
    details.set_error_info(code.as_str(), ERROR_DOMAIN, metadata);
    let mut status = Status::with_error_details(grpc_code(code), message, details);
    // For the RPC metrics and span (removed before the answer leaves).
    status.metadata_mut().insert(
        crate::telemetry::CODE_HEADER,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_carries_its_machine_code_as_error_info_reason() {
        let status = status(AuthError::invalid("email", "is required"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "latchkey");
        assert_eq!(
            info.metadata.get("field").map(String::as_str),
            Some("email")
        );
        let bad = details.bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "email");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = status(AuthError::Internal(anyhow::anyhow!("secret db detail")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
