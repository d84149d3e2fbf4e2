//! Admitting only requests with a valid access token (feature `axum`):
//!
//! - [`Claims`] is an axum extractor: a handler taking `claims: Claims`
//!   runs only for a request with a valid `Authorization: Bearer <token>`,
//!   checked by the [`Verifier`] in the router's state (`Verifier:
//!   FromRef<S>`); any other request gets the [`Rejection`].
//! - [`RequireToken`] is a tower layer doing the same for every route under
//!   it (any service of `http` requests), putting the [`Claims`] in the
//!   request's extensions (`Extension<Claims>`, or the `Claims` extractor).
//!
//! A missing token or one the verifier refuses gets 401 with
//! `WWW-Authenticate: Bearer` (RFC 6750); when the keys cannot be fetched, 503.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header, request::Parts},
    response::IntoResponse,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Claims, Verifier, VerifyError};

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization: Bearer` header.
    #[error("an access token is required (Authorization: Bearer)")]
    Missing,
    /// The verifier refused the token, or could not check it.
    #[error(transparent)]
    Refused(#[from] VerifyError),
}

impl Rejection {
    /// 401, or 503 when the keys could not be fetched.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Refused(VerifyError::KeysUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 challenge, for the 401s.
    fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::Missing => Some(HeaderValue::from_static("Bearer")),
            Self::Refused(VerifyError::InvalidToken(_)) => {
                Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#))
            }
            Self::Refused(VerifyError::KeysUnavailable(_)) => None,
        }
    }

    /// The response, with an empty body of any type.
    fn response<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.status();
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        let mut response = (self.status(), self.to_string()).into_response();
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

async fn admit(verifier: &Verifier, headers: &HeaderMap) -> Result<Claims, Rejection> {
    let token = bearer_token(headers).ok_or(Rejection::Missing)?;
    Ok(verifier.verify(token).await?)
}

impl<S> FromRequestParts<S> for Claims
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        // Behind RequireToken the token is checked already.
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(claims.clone());
        }
        admit(&Verifier::from_ref(state), &parts.headers).await
    }
}

/// A tower layer admitting only requests with a valid access token.
#[derive(Clone)]
pub struct RequireToken {
    verifier: Verifier,
}

impl RequireToken {
    /// Checks tokens with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`RequireToken`] wraps around another.
#[derive(Clone)]
pub struct RequireTokenService<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireTokenService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            match admit(&verifier, request.headers()).await {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::{Extension, Router, routing::get};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};

    use super::*;
    use crate::testing::{Keys, ed25519, payload, sign};

    async fn me(claims: Claims) -> String {
        format!("hello {}", claims.email)
    }

    async fn session(Extension(claims): Extension<Claims>) -> String {
        format!("session {}", claims.sid)
    }

    /// GET `path` with an optional bearer token: status, challenge, body.
    async fn get_path(
        base: &str,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request = Request::get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, challenge, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_requests_with_a_valid_token_get_through() {
        let a = ed25519("a", 1);
        let keys = Keys::of(&[&a]);
        let verifier = Verifier::builder("iss", "aud").source(keys.clone());
        let app = Router::new()
            .route("/me", get(me))
            .merge(
                Router::new()
                    .route("/session", get(session))
                    .layer(RequireToken::new(verifier.clone())),
            )
            .with_state(verifier);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let token = sign(&a, &payload());
        let mut expired = payload();
        expired["exp"] = 1.into();
        let expired = sign(&a, &expired);
        let bearer = Some(r#"Bearer error="invalid_token""#.to_owned());
        for path in ["/me", "/session"] {
            let (status, challenge, _) = get_path(&base, path, None).await;
            assert_eq!(
                (status, challenge.as_deref()),
                (StatusCode::UNAUTHORIZED, Some("Bearer"))
            );
            let (status, challenge, _) = get_path(&base, path, Some(&expired)).await;
            assert_eq!(
                (status, &challenge),
                (StatusCode::UNAUTHORIZED, &bearer),
                "{path}"
            );
            let (status, challenge, _) = get_path(&base, path, Some("garbage")).await;
            assert_eq!(
                (status, &challenge),
                (StatusCode::UNAUTHORIZED, &bearer),
                "{path}"
            );
        }
        let (status, _, body) = get_path(&base, "/me", Some(&token)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "hello ada@example.com")
        );
        let (status, _, body) = get_path(&base, "/session", Some(&token)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "session s1"));

        // The keys cannot be fetched: 503, not the caller's fault.
        let b = ed25519("b", 2);
        *keys.down.lock().unwrap() = true;
        let (status, challenge, _) = get_path(&base, "/me", Some(&sign(&b, &payload()))).await;
        assert_eq!((status, challenge), (StatusCode::SERVICE_UNAVAILABLE, None));
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&headers), token, "{value}");
        }
    }
}
