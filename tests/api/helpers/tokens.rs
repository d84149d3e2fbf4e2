//! Tokens checked the way an independent service checks them.

use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};
use latchkey::proto;
use serde::Deserialize;

use super::TestApp;

#[derive(Debug, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub sid: String,
    pub tid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The app's data (tenant static claims and user metadata), if any.
    #[serde(default)]
    pub app_metadata: Option<serde_json::Value>,
}

/// Verifies an access token the way an independent service would: with a
/// standard JWT library and the keys from GetJwks only.
pub async fn verify_with_jwks(app: &TestApp, token: &str) -> (jsonwebtoken::Header, Claims) {
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    let kid = header.kid.clone().expect("kid in header");
    let jwks = app.jwks().await;
    let key = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS"));
    let jwk: Jwk = serde_json::from_value(jwk_json(key)).expect("a standard JWK");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[app.settings.issuer.as_str()]);
    validation.set_audience(&[app.settings.audience.as_str()]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_jwk(&jwk).expect("decoding key from JWK"),
        &validation,
    )
    .expect("token verifies against the JWKS");
    (header, data.claims)
}

/// The RFC 7517 JSON of a proto Jwk (empty fields left out).
pub fn jwk_json(k: &proto::Jwk) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, value) in [
        ("kty", &k.kty),
        ("crv", &k.crv),
        ("x", &k.x),
        ("y", &k.y),
        ("n", &k.n),
        ("e", &k.e),
        ("kid", &k.kid),
        ("alg", &k.alg),
        ("use", &k.r#use),
    ] {
        if !value.is_empty() {
            m.insert(name.to_owned(), value.clone().into());
        }
    }
    m.into()
}
