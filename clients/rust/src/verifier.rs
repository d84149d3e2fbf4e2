//! Verifies latchkey access tokens locally with the tenant's published keys.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{
        Client as HttpClient,
        connect::{Connect, HttpConnector},
    },
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    AuthClient,
    proto::{GetJwksRequest, GetJwksResponse, Jwk},
};

/// Why a key set could not be fetched.
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// Where a [`Verifier`] gets the public keys: [`HttpJwks`], [`GrpcJwks`], or
/// your own (for example an HTTPS client you already use).
pub trait JwksSource: Send + Sync + 'static {
    /// The current key set.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, FetchError>> + Send + '_>>;
}

/// The JWKS document of a tenant on latchkey's HTTP listener:
/// `/.well-known/jwks.json` for the default tenant (or `None`), else
/// `/tenants/{tenant_id}/.well-known/jwks.json`.
pub fn jwks_url(base_url: &str, tenant_id: Option<&str>) -> String {
    let base = base_url.trim_end_matches('/');
    match tenant_id {
        None | Some("default") => format!("{base}/.well-known/jwks.json"),
        Some(tenant) => format!("{base}/tenants/{tenant}/.well-known/jwks.json"),
    }
}

/// A JWKS fetched over HTTP with hyper (the client tonic connects with).
/// [`HttpJwks::new`] speaks plain `http://`; for `https://` pass a TLS
/// connector (such as hyper-rustls's) to [`HttpJwks::with_connector`].
pub struct HttpJwks<C = HttpConnector> {
    uri: http::Uri,
    client: HttpClient<C, Empty<Bytes>>,
}

/// A JWKS larger than this is refused (latchkey's holds a few keys).
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL of [`HttpJwks::new`] is not an `http://` URL.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {why}")]
pub struct InvalidJwksUrl {
    url: String,
    why: String,
}

impl HttpJwks {
    /// The JWKS at `url`, an `http://` URL.
    pub fn new(url: &str) -> Result<Self, InvalidJwksUrl> {
        let invalid = |why: &str| InvalidJwksUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid(
                "HttpJwks::new speaks http:// only; pass a TLS connector to HttpJwks::with_connector",
            ));
        }
        Ok(Self::with_connector(uri, HttpConnector::new()))
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> HttpJwks<C> {
    /// The JWKS at `uri` through `connector`.
    pub fn with_connector(uri: http::Uri, connector: C) -> Self {
        let client = HttpClient::builder(TokioExecutor::new()).build(connector);
        Self { uri, client }
    }

    async fn get(&self) -> Result<Vec<Jwk>, FetchError> {
        let response = self.client.get(self.uri.clone()).await?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("GET {} answered {}", self.uri, response.status()).into());
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await?
            .to_bytes();
        Ok(serde_json::from_slice::<GetJwksResponse>(&body)?.keys)
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> JwksSource for HttpJwks<C> {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, FetchError>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::timeout(FETCH_TIMEOUT, self.get())
                .await
                .map_err(|_| format!("GET {} timed out", self.uri))?
        })
    }
}

/// The key set from `GetJwks` over gRPC (needs no API key). `tenant_id`
/// empty: the tenant of the client's API key.
pub struct GrpcJwks {
    client: AuthClient,
    tenant_id: String,
}

impl GrpcJwks {
    /// `GetJwks` through `client`.
    pub fn new(client: AuthClient, tenant_id: impl Into<String>) -> Self {
        let tenant_id = tenant_id.into();
        Self { client, tenant_id }
    }
}

impl JwksSource for GrpcJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Vec<Jwk>, FetchError>> + Send + '_>> {
        Box::pin(async move {
            let request = GetJwksRequest {
                tenant_id: self.tenant_id.clone(),
            };
            let reply = self.client.clone().get_jwks(request).await?;
            Ok(reply.into_inner().keys)
        })
    }
}

/// The claims of a valid latchkey access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's email address, as they signed in with it.
    pub email: String,
    /// The login session (what Revoke and RevokeSession end).
    pub sid: String,
    /// The tenant.
    pub tid: String,
    pub iss: String,
    pub aud: String,
    /// Issued at, not before, expires at: seconds since the Unix epoch.
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The token's unique id.
    pub jti: String,
}

/// Why [`Verifier::verify`] refused a token.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a valid access token for this verifier: malformed, signed by an
    /// unknown key or with another `alg` than its key's, a bad signature,
    /// expired or not yet valid, or the wrong `iss`, `aud` or `tid`.
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    /// The keys could not be fetched, so the token could not be checked:
    /// not the caller's fault (answer 503, not 401).
    #[error("the signing keys could not be fetched: {0}")]
    KeysUnavailable(#[source] FetchError),
}

/// The algorithms latchkey signs with; anything else is refused before any
/// key is looked up.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// Checks latchkey access tokens: signature, `alg` (pinned to the key's),
/// `exp` and `nbf`, `iss`, `aud` and, for a verifier of one tenant, `tid`.
///
/// The key set is cached for [`VerifierBuilder::cache_for`] (5 minutes). A
/// token whose `kid` is not in the cache makes it refetch at once, but such
/// refetches happen at most once per [`VerifierBuilder::min_refetch_interval`]
/// (10 seconds), so forged `kid`s cannot flood the server. Cheap to clone;
/// clones share the cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn JwksSource>,
    issuer: String,
    audience: String,
    tenant_id: Option<String>,
    leeway: Duration,
    cache_for: Duration,
    min_refetch: Duration,
    clock: Clock,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Key>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last refetch for an unknown `kid`.
    refetched_at: Option<Instant>,
    /// The last failed fetch: no new attempt before `min_refetch` has passed.
    failed_at: Option<Instant>,
    fetches: u64,
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    alg: Algorithm,
}

/// Configures a [`Verifier`]; finish with [`http`](Self::http),
/// [`grpc`](Self::grpc) or [`source`](Self::source).
#[must_use]
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    tenant_id: Option<String>,
    leeway: Duration,
    cache_for: Duration,
    min_refetch: Duration,
    clock: Clock,
}

/// The time the cache ages by (a hand-moved clock in the tests).
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

impl VerifierBuilder {
    /// Accept only tokens of this tenant (`tid`), and read this tenant's keys.
    /// Without it the default tenant's keys are read (over HTTP) or the API
    /// key's tenant's (over gRPC), and `tid` is not checked.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (whole seconds; default none).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long a fetched key set is used before it is fetched again.
    pub fn cache_for(mut self, cache_for: Duration) -> Self {
        self.cache_for = cache_for;
        self
    }

    /// The least time between two refetches for unknown `kid`s (and after a
    /// failed fetch).
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// Keys from latchkey's HTTP listener (`base_url`, `http://host:port`):
    /// the tenant's JWKS path, see [`jwks_url`].
    pub fn http(self, base_url: &str) -> Result<Verifier, InvalidJwksUrl> {
        let url = jwks_url(base_url, self.tenant_id.as_deref());
        Ok(self.source(HttpJwks::new(&url)?))
    }

    /// Keys from `GetJwks` through `client`.
    pub fn grpc(self, client: &AuthClient) -> Verifier {
        let tenant_id = self.tenant_id.clone().unwrap_or_default();
        self.source(GrpcJwks::new(client.clone(), tenant_id))
    }

    /// Keys from any source.
    pub fn source(self, source: impl JwksSource) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                source: Box::new(source),
                issuer: self.issuer,
                audience: self.audience,
                tenant_id: self.tenant_id,
                leeway: self.leeway,
                cache_for: self.cache_for,
                min_refetch: self.min_refetch,
                clock: self.clock,
                state: Default::default(),
            }),
        }
    }

    #[cfg(test)]
    fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl Verifier {
    /// A verifier of tokens whose `iss` is `issuer` and `aud` is `audience`
    /// (the server's `LATCHKEY_ISSUER` and `LATCHKEY_AUDIENCE`, or the
    /// tenant's own).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            tenant_id: None,
            leeway: Duration::ZERO,
            cache_for: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            clock: Arc::new(Instant::now),
        }
    }

    /// The claims of `token`, an access token (no `Bearer ` prefix), or why
    /// it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let invalid = |e: jsonwebtoken::errors::Error| VerifyError::InvalidToken(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(VerifyError::InvalidToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| VerifyError::InvalidToken("the token names no signing key".into()))?;
        let key = self.key(&kid).await?;
        if key.alg != header.alg {
            return Err(VerifyError::InvalidToken(format!(
                "key {kid} signs with {:?}, not {:?}",
                key.alg, header.alg
            )));
        }
        let inner = &self.inner;
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&inner.issuer]);
        validation.set_audience(&[&inner.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = inner.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(invalid)?
            .claims;
        if let Some(tenant) = &inner.tenant_id
            && claims.tid != *tenant
        {
            return Err(VerifyError::InvalidToken(format!(
                "a token of tenant {:?}, not {tenant:?}",
                claims.tid
            )));
        }
        Ok(claims)
    }

    /// How many times the key set was fetched successfully (for metrics).
    pub async fn fetches(&self) -> u64 {
        self.inner.state.lock().await.fetches
    }

    async fn key(&self, kid: &str) -> Result<Key, VerifyError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let now = (inner.clock)();
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        let stale = since(state.fetched_at).is_none_or(|age| age >= inner.cache_for);
        let backing_off = since(state.failed_at).is_some_and(|age| age < inner.min_refetch);
        let refetch = !state.keys.contains_key(kid)
            && since(state.refetched_at).is_none_or(|age| age >= inner.min_refetch);
        if !backing_off && (stale || refetch) {
            if !stale {
                state.refetched_at = Some(now);
            }
            match inner.source.fetch().await {
                Ok(jwks) => {
                    state.keys = jwks.iter().filter_map(usable).collect();
                    state.fetched_at = Some(now);
                    state.failed_at = None;
                    state.fetches += 1;
                }
                // A cached key still verifies: a retired key stays published
                // until every token it signed has expired.
                Err(error) if !state.keys.contains_key(kid) => {
                    state.failed_at = Some(now);
                    return Err(VerifyError::KeysUnavailable(error));
                }
                Err(_) => state.failed_at = Some(now),
            }
        }
        match state.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if state.fetched_at.is_none() => Err(VerifyError::KeysUnavailable(
                "no key set fetched yet (the last attempt failed)".into(),
            )),
            None => Err(VerifyError::InvalidToken(format!(
                "unknown signing key {kid:?}"
            ))),
        }
    }
}

/// A signing key this verifier can use, by `kid`: `alg` is one latchkey signs
/// with and matches the key type. Anything else is skipped.
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    if jwk.kid.is_empty() || !(jwk.r#use.is_empty() || jwk.r#use == "sig") {
        return None;
    }
    let alg: Algorithm = jwk.alg.parse().ok()?;
    let decoding = match (alg, jwk.kty.as_str(), jwk.crv.as_str()) {
        (Algorithm::EdDSA, "OKP", "Ed25519") => DecodingKey::from_ed_components(&jwk.x),
        (Algorithm::ES256, "EC", "P-256") => DecodingKey::from_ec_components(&jwk.x, &jwk.y),
        (Algorithm::RS256, "RSA", _) => DecodingKey::from_rsa_components(&jwk.n, &jwk.e),
        _ => return None,
    };
    Some((
        jwk.kid.clone(),
        Key {
            decoding: decoding.ok()?,
            alg,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jsonwebtoken::{EncodingKey, Header};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::testing::{Keys, ed25519, now, p256, payload, sign};

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct TestClock {
        start: Instant,
        offset: Arc<Mutex<Duration>>,
    }

    impl TestClock {
        fn new() -> Self {
            let offset = Arc::default();
            Self {
                start: Instant::now(),
                offset,
            }
        }
        fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap() += by;
        }
    }

    fn verifier(clock: &TestClock) -> VerifierBuilder {
        let clock = clock.clone();
        Verifier::builder("iss", "aud").clock(Arc::new(move || {
            clock.start + *clock.offset.lock().unwrap()
        }))
    }

    fn invalid(result: Result<Claims, VerifyError>) -> String {
        match result {
            Err(VerifyError::InvalidToken(why)) => why,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_valid_token_gives_its_claims() {
        let a = ed25519("a", 1);
        let e = p256("e", 2);
        let keys = Keys::of(&[&a, &e]);
        let v = verifier(&TestClock::new()).tenant("t").source(keys.clone());
        let claims = v.verify(&sign(&a, &payload())).await.unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.email, "ada@example.com");
        assert_eq!(claims.tid, "t");
        assert_eq!(v.verify(&sign(&e, &payload())).await.unwrap().sid, "s1");
        assert_eq!(keys.reads(), 1);
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let clock = TestClock::new();
        let a = ed25519("a", 1);
        let b = ed25519("b", 2);
        let keys = Keys::of(&[&a]);
        let v = verifier(&clock)
            .min_refetch_interval(Duration::from_secs(10))
            .source(keys.clone());
        v.verify(&sign(&a, &payload())).await.unwrap();
        assert_eq!(keys.reads(), 1);
        // A forged kid: one refetch, then none until the interval has passed.
        let forged = ed25519("forged", 2);
        assert!(invalid(v.verify(&sign(&forged, &payload())).await).contains("unknown"));
        assert_eq!(keys.reads(), 2);
        keys.keys.lock().unwrap().push(b.jwk.clone());
        invalid(v.verify(&sign(&b, &payload())).await);
        assert_eq!(keys.reads(), 2);
        // Known kids never wait for the interval.
        v.verify(&sign(&a, &payload())).await.unwrap();
        clock.advance(Duration::from_secs(10));
        assert_eq!(v.verify(&sign(&b, &payload())).await.unwrap().sub, "u1");
        assert_eq!(keys.reads(), 3);
        assert_eq!(v.fetches().await, 3);
    }

    #[tokio::test]
    async fn the_key_set_is_refetched_when_the_cache_expires() {
        let clock = TestClock::new();
        let a = ed25519("a", 1);
        let keys = Keys::of(&[&a]);
        let v = verifier(&clock)
            .cache_for(Duration::from_secs(60))
            .source(keys.clone());
        v.verify(&sign(&a, &payload())).await.unwrap();
        clock.advance(Duration::from_secs(59));
        v.verify(&sign(&a, &payload())).await.unwrap();
        assert_eq!(keys.reads(), 1);
        clock.advance(Duration::from_secs(1));
        v.verify(&sign(&a, &payload())).await.unwrap();
        assert_eq!(keys.reads(), 2);
        // The key server goes down: the cached key keeps verifying, and the
        // next attempt waits for the refetch interval.
        *keys.down.lock().unwrap() = true;
        clock.advance(Duration::from_secs(60));
        v.verify(&sign(&a, &payload())).await.unwrap();
        v.verify(&sign(&a, &payload())).await.unwrap();
        assert_eq!(keys.reads(), 3);
        assert_eq!(v.fetches().await, 2);
        // A kid the cache lacks cannot be checked: the keys are unavailable.
        let b = ed25519("b", 2);
        clock.advance(Duration::from_secs(10));
        let unavailable = v.verify(&sign(&b, &payload())).await;
        assert!(
            matches!(unavailable, Err(VerifyError::KeysUnavailable(_))),
            "{unavailable:?}"
        );
        assert_eq!(keys.reads(), 4);
    }

    #[tokio::test]
    async fn a_verifier_whose_first_fetch_fails_says_the_keys_are_unavailable() {
        let a = ed25519("a", 1);
        let keys = Keys::of(&[&a]);
        *keys.down.lock().unwrap() = true;
        let v = verifier(&TestClock::new()).source(keys.clone());
        for _ in 0..2 {
            let result = v.verify(&sign(&a, &payload())).await;
            assert!(
                matches!(result, Err(VerifyError::KeysUnavailable(_))),
                "{result:?}"
            );
        }
        assert_eq!(keys.reads(), 1);
    }

    #[tokio::test]
    async fn claims_are_checked() {
        let a = ed25519("a", 1);
        let keys = Keys::of(&[&a]);
        let v = verifier(&TestClock::new()).tenant("t").source(keys.clone());
        let now = now();
        for (claim, value) in [
            ("iss", serde_json::json!("other")),
            ("aud", serde_json::json!("other")),
            ("exp", serde_json::json!(now - 5)),
            ("nbf", serde_json::json!(now + 60)),
            ("tid", serde_json::json!("other")),
        ] {
            let mut claims = payload();
            claims[claim] = value;
            invalid(v.verify(&sign(&a, &claims)).await);
        }
        for required in ["exp", "nbf", "iss", "aud", "sub", "tid"] {
            let mut claims = payload();
            claims.as_object_mut().unwrap().remove(required);
            invalid(v.verify(&sign(&a, &claims)).await);
        }
        // Without a tenant the verifier accepts any tid; a leeway admits a
        // token just expired.
        let any = verifier(&TestClock::new())
            .leeway(Duration::from_secs(30))
            .source(keys.clone());
        let mut claims = payload();
        claims["tid"] = "other".into();
        claims["exp"] = (now - 5).into();
        assert_eq!(any.verify(&sign(&a, &claims)).await.unwrap().tid, "other");
    }

    #[tokio::test]
    async fn the_alg_is_pinned_to_the_key() {
        let a = ed25519("a", 1);
        let e = p256("e", 2);
        let keys = Keys::of(&[&a]);
        let v = verifier(&TestClock::new()).source(keys.clone());
        // An HMAC token naming the public key as its secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("a".into());
        let forged = jsonwebtoken::encode(
            &header,
            &payload(),
            &EncodingKey::from_secret(a.jwk.x.as_bytes()),
        )
        .unwrap();
        assert!(invalid(v.verify(&forged).await).contains("not accepted"));
        // An ES256 token under the Ed25519 key's kid.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("a".into());
        let forged = jsonwebtoken::encode(&header, &payload(), &e.encoding).unwrap();
        assert!(invalid(v.verify(&forged).await).contains("signs with"));
        // A token signed by another key under a known kid.
        let other = ed25519("a", 9);
        invalid(v.verify(&sign(&other, &payload())).await);
        invalid(v.verify("not.a.token").await);
        assert_eq!(keys.reads(), 1);
    }

    #[test]
    fn keys_latchkey_cannot_have_signed_with_are_skipped() {
        let a = ed25519("a", 1);
        let e = p256("e", 2);
        assert!(usable(&a.jwk).is_some());
        assert!(usable(&e.jwk).is_some());
        let wrong = [
            Jwk {
                r#use: "enc".into(),
                ..a.jwk.clone()
            },
            Jwk {
                kid: String::new(),
                ..a.jwk.clone()
            },
            Jwk {
                alg: "ES256".into(),
                ..a.jwk.clone()
            },
            Jwk {
                alg: "HS256".into(),
                ..a.jwk.clone()
            },
            Jwk {
                crv: "P-384".into(),
                ..e.jwk.clone()
            },
            Jwk {
                x: "!".into(),
                ..a.jwk.clone()
            },
        ];
        for jwk in wrong {
            assert!(usable(&jwk).is_none(), "{jwk:?}");
        }
    }

    #[test]
    fn a_jwk_serialises_as_rfc_7517_json() {
        let a = ed25519("a", 1);
        let json = serde_json::to_value(GetJwksResponse {
            keys: vec![a.jwk.clone()],
        })
        .unwrap();
        let key = &json["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["use"], "sig");
        assert!(key.get("y").is_none() && key.get("n").is_none(), "{key}");
        let back: GetJwksResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back.keys, vec![a.jwk]);
    }

    #[test]
    fn jwks_urls_name_the_tenant() {
        let base = "http://127.0.0.1:8080/";
        assert_eq!(
            jwks_url(base, None),
            "http://127.0.0.1:8080/.well-known/jwks.json"
        );
        assert_eq!(
            jwks_url(base, Some("default")),
            "http://127.0.0.1:8080/.well-known/jwks.json"
        );
        assert_eq!(
            jwks_url(base, Some("acme")),
            "http://127.0.0.1:8080/tenants/acme/.well-known/jwks.json"
        );
        assert!(HttpJwks::new("https://login.example.com/.well-known/jwks.json").is_err());
    }

    /// Serves `body` with `status` to every connection, over a real socket.
    async fn serve_once(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending a request");
                request.extend_from_slice(&buf[..n]);
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, served)
    }

    #[tokio::test]
    async fn a_jwks_is_read_over_http() {
        let a = ed25519("a", 1);
        let body = serde_json::to_string(&GetJwksResponse {
            keys: vec![a.jwk.clone()],
        })
        .unwrap();
        let (url, served) = serve_once("200 OK", body).await;
        let v = Verifier::builder("iss", "aud").source(HttpJwks::new(&url).unwrap());
        assert_eq!(v.verify(&sign(&a, &payload())).await.unwrap().sub, "u1");
        let request = served.await.unwrap();
        assert!(
            request.starts_with("GET /.well-known/jwks.json HTTP/1.1\r\n"),
            "{request}"
        );

        let (url, _served) = serve_once("503 Service Unavailable", String::new()).await;
        let result = HttpJwks::new(&url).unwrap().fetch().await;
        assert!(result.unwrap_err().to_string().contains("503"));
    }
}
