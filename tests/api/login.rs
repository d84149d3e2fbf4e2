use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use latchkey::{auth::keys::SigningAlg, proto};
use serde::Deserialize;

use crate::helpers::{Backend, Case, TestApp, spawn_app, spawn_app_with};
use crate::matrix;

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

matrix!(
    code_login_returns_a_token_that_verifies_against_the_jwks,
    a_second_login_finds_the_same_user_by_normalised_address,
);

async fn code_login_returns_a_token_that_verifies_against_the_jwks(case: Case) {
    let app = spawn_app(case).await;

    let started = app.start_auth("ada@example.com").await.unwrap();
    assert_eq!(started.code_length, 6);
    let expires_at = started.expires_at.unwrap();
    let now = app.clock.now_ms() / 1000;
    assert!(
        (expires_at.seconds - now - 600).abs() <= 2,
        "code valid 10 minutes"
    );

    let mail = app.smtp.wait_for("ada@example.com").await;
    let code = mail.code();
    assert_eq!(code.len(), 6);
    let verified = app.verify(&started.session_id, &code).await.unwrap();

    assert_eq!(verified.token_type, "Bearer");
    assert_eq!(verified.expires_in, 900);
    assert_eq!(verified.session_id, started.session_id);
    assert!(verified.new_user);
    assert!(verified.refresh_token.starts_with("lkr_"));
    let user = verified.user.unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(
        uuid::Uuid::parse_str(&user.id).unwrap().get_version_num(),
        7
    );

    let (header, claims) = verify_with_jwks(&app, &verified.token).await;
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(claims.iss, "https://auth.app.test");
    assert_eq!(claims.aud, "app.test");
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.email, "ada@example.com");
    assert_eq!(claims.sid, started.session_id);
    assert_eq!(claims.tid, "default");
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(!claims.jti.is_empty());
}

async fn a_second_login_finds_the_same_user_by_normalised_address(case: Case) {
    let app = spawn_app(case).await;
    let first = app.login("grace.hopper@example.com").await;

    // Same address with surrounding space and different case (local part
    // and domain): the same mailbox, so the same user (see
    // tests/api/identity.rs for every spelling).
    let started = app.start_auth("  Grace.Hopper@EXAMPLE.com ").await.unwrap();
    let mails = app.smtp.wait_for_count("grace.hopper@example.com", 2).await;
    let second = app
        .verify(&started.session_id, &mails[1].code())
        .await
        .unwrap();

    assert!(first.verify.new_user);
    assert!(!second.new_user);
    assert_eq!(second.user.unwrap().id, first.verify.user.unwrap().id);
    assert_ne!(started.session_id, first.session_id);
}

#[tokio::test]
async fn the_sign_in_email_is_complete_and_honest() {
    let app = spawn_app(Backend::Sqlite).await;
    app.start_auth("linus@example.com").await.unwrap();
    let mail = app.smtp.wait_for("linus@example.com").await;

    assert_eq!(mail.to, vec!["linus@example.com".to_owned()]);
    assert_eq!(
        mail.header("From").unwrap(),
        "\"Test App\" <login@app.test>"
    );
    let code = mail.code();
    assert_eq!(
        mail.header("Subject").unwrap(),
        format!("{code} is your Test App sign-in code")
    );
    assert!(mail.header("Message-ID").unwrap().ends_with("@app.test>"));
    assert!(mail.header("Date").is_some());
    assert_eq!(mail.header("Auto-Submitted").unwrap(), "auto-generated");
    assert!(mail.data.contains("multipart/alternative"));
    assert!(mail.data.contains("text/plain") && mail.data.contains("text/html"));
    assert!(!mail.data.contains("<img"), "no images or tracking pixels");
}

#[tokio::test]
async fn es256_and_rs256_tokens_verify_with_a_standard_library() {
    for (alg, expected) in [
        (SigningAlg::ES256, Algorithm::ES256),
        (SigningAlg::RS256, Algorithm::RS256),
    ] {
        let app = spawn_app_with(Backend::Sqlite, |s| s.signing_alg = alg).await;
        let login = app.login("ken@example.com").await;
        let (header, claims) = verify_with_jwks(&app, &login.verify.token).await;
        assert_eq!(header.alg, expected);
        assert_eq!(claims.sid, login.session_id);
        let jwks = app.jwks().await;
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(jwks.keys[0].alg, alg.as_str());
    }
}

#[tokio::test]
async fn code_length_follows_the_configuration() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.code_length = 8).await;
    let started = app.start_auth("margaret@example.com").await.unwrap();
    assert_eq!(started.code_length, 8);
    let code = app.smtp.wait_for("margaret@example.com").await.code();
    assert_eq!(code.len(), 8);
    app.verify(&started.session_id, &code).await.unwrap();
}
