use jsonwebtoken::Algorithm;
use latchkey::auth::keys::SigningAlg;

use crate::helpers::{Backend, Case, spawn_app, spawn_app_with, verify_with_jwks};
use crate::matrix;

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
