//! Magic links: one email with a link (and a code), single use, whichever
//! proof comes first wins; the validation-URL allowlist; locales and
//! template overrides of the emails.

use latchkey::proto::{self, Method};

use crate::helpers::verify_with_jwks;
use crate::helpers::{Backend, Case, TestApp, spawn_app, spawn_app_with};
use crate::matrix;

matrix!(
    a_magic_link_logs_in_like_a_code_and_works_once,
    with_code_and_link_the_first_proof_used_ends_the_other,
    a_validation_url_off_the_allowlist_is_refused_and_nothing_is_sent,
    encoded_separators_cannot_leave_the_allowed_path,
);

const ALLOWED: &str = "https://app.test/auth";

async fn app_with_links(case: impl Into<Case>) -> TestApp {
    spawn_app_with(case, |s| {
        s.allowed_validation_urls = vec![ALLOWED.into(), "http://localhost:3000/".into()];
    })
    .await
}

async fn start(app: &TestApp, email: &str, method: Method, url: &str) -> proto::StartAuthResponse {
    app.api
        .start_auth(proto::StartAuthRequest {
            email: email.into(),
            method: method as i32,
            validation_url: url.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn verify_link(
    app: &TestApp,
    token: &str,
) -> Result<proto::VerifyResponse, crate::helpers::ApiError> {
    app.api
        .verify(proto::VerifyRequest {
            link_token: token.into(),
            ..Default::default()
        })
        .await
}

async fn a_magic_link_logs_in_like_a_code_and_works_once(case: Case) {
    let app = app_with_links(case).await;
    let started = start(
        &app,
        "link@example.com",
        Method::Link,
        "https://app.test/auth/callback?next=%2Fhome",
    )
    .await;
    let mail = app.smtp.wait_for("link@example.com").await;

    // The link is the validation URL plus the token; a link-only email has no code.
    let link = mail.link();
    assert!(
        link.starts_with("https://app.test/auth/callback?next=%2Fhome&token=lkl_"),
        "{link}"
    );
    assert_eq!(mail.header("Subject").unwrap(), "Sign in to Test App");
    assert!(
        mail.part("text/html")
            .replace("&#x2f;", "/")
            .contains(&link.replace('&', "&amp;"))
    );

    let verified = verify_link(&app, &mail.link_token()).await.unwrap();
    assert_eq!(verified.session_id, started.session_id);
    assert!(verified.new_user);
    assert_eq!(verified.user.as_ref().unwrap().email, "link@example.com");
    let (_, claims) = verify_with_jwks(&app, &verified.token).await;
    assert_eq!(claims.sid, started.session_id);
    app.refresh(&verified.refresh_token).await.unwrap();

    // Single use.
    let again = verify_link(&app, &mail.link_token()).await.unwrap_err();
    assert_eq!(again.code, "CODE_INVALID");
    // A well-formed token nobody issued.
    let forged = format!("lkl_{}", "B".repeat(43));
    assert_eq!(
        verify_link(&app, &forged).await.unwrap_err().code,
        "CODE_INVALID"
    );
}

async fn with_code_and_link_the_first_proof_used_ends_the_other(case: Case) {
    let app = app_with_links(case).await;

    // Code first: the link then fails.
    let first = start(&app, "both@example.com", Method::CodeAndLink, ALLOWED).await;
    let mail = app.smtp.wait_for("both@example.com").await;
    let text = mail.part("text/plain");
    assert!(
        text.contains(&mail.code()) && text.contains("token=lkl_"),
        "{text}"
    );
    let sid = app
        .verify(&first.session_id, &mail.code())
        .await
        .unwrap()
        .session_id;
    assert_eq!(
        verify_link(&app, &mail.link_token())
            .await
            .unwrap_err()
            .code,
        "CODE_INVALID"
    );

    // Link first: the code then fails. And METHOD_UNSPECIFIED with a URL means both.
    let second = start(&app, "both@example.com", Method::Unspecified, ALLOWED).await;
    let mails = app.smtp.wait_for_count("both@example.com", 2).await;
    let link_login = verify_link(&app, &mails[1].link_token()).await.unwrap();
    assert_eq!(link_login.session_id, second.session_id);
    assert_ne!(link_login.session_id, sid);
    let code_after = app
        .verify(&second.session_id, &mails[1].code())
        .await
        .unwrap_err();
    assert_eq!(code_after.code, "CODE_INVALID");
}

async fn a_validation_url_off_the_allowlist_is_refused_and_nothing_is_sent(case: Case) {
    let app = app_with_links(case).await;
    let before = app.snapshot().await;
    for url in [
        "https://app.test.evil.example/auth",
        "https://app.test@evil.example/auth",
        "https://evil.example/?https://app.test/auth",
        "https://app.test:8443/auth",
        "http://app.test/auth",
        "https://app.test/authority",
        "https://app.test/other",
        "javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "//app.test/auth",
        "http://localhost:3001/",
    ] {
        let err = app
            .api
            .start_auth(proto::StartAuthRequest {
                email: "victim@example.com".into(),
                method: Method::Link as i32,
                validation_url: url.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, "VALIDATION_URL_NOT_ALLOWED", "{url}");
        err.assert_status(tonic::Code::InvalidArgument, 400);
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused StartAuth wrote something"
    );
    for url in [
        "https://app.test/auth",
        "https://APP.test/auth/x/y?z=1",
        "http://localhost:3000/cb",
    ] {
        start(&app, "ok@example.com", Method::Link, url).await;
    }
    app.smtp.wait_for_count("ok@example.com", 3).await;
    assert!(
        app.smtp
            .mails()
            .iter()
            .all(|m| m.to != ["victim@example.com"])
    );
}

/// The allowed path is a prefix of whole segments, and a path that a
/// server might decode into other segments (`%2F`, `%5C`, `%2E`) is refused
/// outright: `/auth/..%2fadmin` is `/admin` to many web servers.
async fn encoded_separators_cannot_leave_the_allowed_path(case: Case) {
    let app = app_with_links(case).await;
    let before = app.snapshot().await;
    for url in [
        "https://app.test/auth/..%2fadmin",
        "https://app.test/auth/..%2Fadmin",
        "https://app.test/auth/%2e%2e%2fadmin",
        "https://app.test/auth/%2E%2E/admin",
        "https://app.test/auth/.%2e/admin",
        "https://app.test/auth/..%5cadmin",
        "https://app.test/auth/..%5Cadmin",
        "https://app.test/auth/%2e%2e%5c%2e%2e%5cadmin",
        "https://app.test/auth%2fcallback",
        "https://app.test/auth/x%2Fy",
        "https://app.test/auth/.%2E",
        "https://app.test/auth\\..\\admin",
        "https://app.test/authx",
        "https://app.test/auth-admin",
    ] {
        let err = app
            .api
            .start_auth(proto::StartAuthRequest {
                email: "victim@example.com".into(),
                method: Method::Link as i32,
                validation_url: url.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, "VALIDATION_URL_NOT_ALLOWED", "{url}");
        err.assert_status(tonic::Code::InvalidArgument, 400);
    }
    assert_eq!(app.snapshot().await, before, "a refused StartAuth wrote");
    // Encoded characters elsewhere in the path, and in the query, are fine.
    for url in [
        "https://app.test/auth/caf%C3%A9",
        "https://app.test/auth/cb?next=%2F..%2Fhome",
    ] {
        start(&app, "ok@example.com", Method::Link, url).await;
    }
    // (The two emails may arrive in either order.)
    let mails = app.smtp.wait_for_count("ok@example.com", 2).await;
    assert!(
        mails.iter().any(|m| m
            .link()
            .starts_with("https://app.test/auth/cb?next=%2F..%2Fhome&token=lkl_")),
        "{:?}",
        mails.iter().map(|m| m.link()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_default_validation_url_lets_callers_omit_it() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.allowed_validation_urls = vec![ALLOWED.into()];
        s.default_validation_url = Some("https://app.test/auth/magic".into());
    })
    .await;
    // No method, no URL: the default URL, and both proofs.
    let started = app.start_auth_plain("d@example.com").await;
    let mail = app.smtp.wait_for("d@example.com").await;
    assert!(
        mail.link()
            .starts_with("https://app.test/auth/magic?token=lkl_")
    );
    app.verify(&started.session_id, &mail.code()).await.unwrap();
}

#[tokio::test]
async fn emails_follow_the_requested_locale_then_the_tenants_then_english() {
    let app = spawn_app(Backend::Sqlite).await;
    let subject = |locale: &'static str, email: &'static str| {
        let app = &app;
        async move {
            app.api
                .start_auth(proto::StartAuthRequest {
                    email: email.into(),
                    locale: locale.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            app.smtp.wait_for(email).await.header("Subject").unwrap()
        }
    };
    assert!(
        subject("de", "de@example.com")
            .await
            .ends_with("ist dein Anmeldecode für Test App")
    );
    assert!(
        subject("fr-CA", "fr@example.com")
            .await
            .ends_with("est votre code de connexion à Test App")
    );
    assert!(
        subject("sv", "sv@example.com")
            .await
            .ends_with("is your Test App sign-in code")
    );

    app.admin
        .update_tenant(
            "default",
            None,
            &latchkey::auth::tenants::TenantSettings {
                default_locale: Some("fr".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    assert!(
        subject("", "tenant-default@example.com")
            .await
            .contains("code de connexion")
    );
    let de = app.smtp.wait_for("de@example.com").await;
    assert!(de.part("text/html").contains("lang=\"de\""));
}

#[tokio::test]
async fn a_template_directory_overrides_the_built_in_emails() {
    let dir = crate::helpers::TempDir::new();
    std::fs::create_dir_all(dir.path.join("en")).unwrap();
    std::fs::write(
        dir.path.join("en/sign_in.subject.txt"),
        "Your {{ app_name }} code: {{ code }}",
    )
    .unwrap();
    let path = dir.path.clone();
    let app = spawn_app_with(Backend::Sqlite, move |s| s.template_dir = Some(path)).await;
    app.start_auth_plain("tpl@example.com").await;
    let mail = app.smtp.wait_for("tpl@example.com").await;
    let subject = mail.header("Subject").unwrap();
    assert!(subject.starts_with("Your Test App code: "), "{subject}");
}

#[tokio::test]
async fn a_broken_template_override_stops_the_start_naming_the_file() {
    let dir = crate::helpers::TempDir::new();
    std::fs::create_dir_all(dir.path.join("de")).unwrap();
    std::fs::write(
        dir.path.join("de/sign_in.html"),
        "{% if code %}never closed",
    )
    .unwrap();
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let mut settings = crate::helpers::test_settings(&db, &dir.path, "smtp://127.0.0.1:9");
    settings.template_dir = Some(dir.path.clone());
    let err = latchkey::server::Server::build(settings, latchkey::clock::Clock::system())
        .await
        .err()
        .expect("the start fails");
    let message = format!("{err:#}");
    assert!(message.contains("LATCHKEY_TEMPLATE_DIR"), "{message}");
    assert!(message.contains("de/sign_in.html"), "{message}");
}
