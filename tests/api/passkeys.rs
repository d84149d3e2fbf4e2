//! Passkeys: real WebAuthn ceremonies between a software authenticator and
//! the real server, on both databases and both transports. The
//! authenticator signs with real keys for the origin the test names, as a
//! browser page of that origin would make it.

use std::{collections::BTreeSet, time::Duration};

use base64::Engine;
use latchkey::{auth::tenants::TenantSettings, proto};

use crate::helpers::{
    ApiClient, ApiError, Authenticator, Case, LoggedIn, TestApp, spawn_app, spawn_app_with,
    spawn_replica, verify_with_jwks,
};
use crate::matrix;

matrix!(
    a_passkey_added_after_an_email_login_signs_in_alone,
    discoverable_login_finds_the_user_from_the_passkey,
    a_deleted_passkey_no_longer_signs_in,
    answers_from_another_origin_or_relying_party_are_refused,
    a_ceremony_works_once_and_a_tampered_signature_spends_it,
    an_expired_ceremony_is_refused,
    another_tenants_ceremony_is_unknown,
    a_counter_regression_is_refused_recorded_and_marks_the_passkey,
    registration_needs_a_valid_access_token_of_the_user,
    a_passkey_login_answers_the_same_for_any_address,
    without_a_relying_party_passkeys_are_not_configured,
    failed_assertions_spend_the_wrong_code_budget,
    zero_configuration_serves_pages_on_any_localhost_port,
    racing_finishes_of_one_ceremony_make_one_session,
    a_ceremony_started_on_one_replica_finishes_on_another,
    a_disabled_users_passkey_is_refused_until_they_are_enabled,
);

/// The page of the app (an allowed origin).
const ORIGIN: &str = "https://app.test";

async fn spawn(case: Case) -> TestApp {
    spawn_app_with(case, |s| {
        s.passkey_rp_id = "app.test".into();
        s.passkey_origins = vec![ORIGIN.into(), "https://login.app.test".into()];
    })
    .await
}

/// The passkey registered for a signed-in user, and who.
struct Registered {
    device: Authenticator,
    login: LoggedIn,
    passkey: proto::Passkey,
}

fn token(login: &LoggedIn) -> String {
    login.verify.token.clone()
}

async fn start_registration(
    api: &ApiClient,
    access_token: &str,
) -> Result<proto::StartPasskeyRegistrationResponse, ApiError> {
    api.start_passkey_registration(proto::StartPasskeyRegistrationRequest {
        access_token: access_token.into(),
    })
    .await
}

async fn finish_registration(
    api: &ApiClient,
    access_token: &str,
    ceremony_id: &str,
    credential_json: String,
) -> Result<proto::FinishPasskeyRegistrationResponse, ApiError> {
    api.finish_passkey_registration(proto::FinishPasskeyRegistrationRequest {
        access_token: access_token.into(),
        ceremony_id: ceremony_id.into(),
        credential_json,
        name: "Work laptop".into(),
    })
    .await
}

/// An email login, then a passkey added for that user.
async fn register(app: &TestApp, email: &str) -> Registered {
    let login = app.login(email).await;
    let mut device = Authenticator::new();
    let started = start_registration(&app.api, &token(&login)).await.unwrap();
    let credential = device.create(ORIGIN, &started.options_json).unwrap();
    let passkey = finish_registration(&app.api, &token(&login), &started.ceremony_id, credential)
        .await
        .expect("FinishPasskeyRegistration")
        .passkey
        .unwrap();
    Registered {
        device,
        login,
        passkey,
    }
}

async fn start_login(
    api: &ApiClient,
    email: &str,
) -> Result<proto::StartPasskeyLoginResponse, ApiError> {
    api.start_passkey_login(proto::StartPasskeyLoginRequest {
        email: email.into(),
    })
    .await
}

async fn finish_login(
    api: &ApiClient,
    ceremony_id: &str,
    credential_json: String,
) -> Result<proto::FinishPasskeyLoginResponse, ApiError> {
    api.finish_passkey_login(proto::FinishPasskeyLoginRequest {
        ceremony_id: ceremony_id.into(),
        credential_json,
        client: Some(proto::ClientInfo {
            ip: "203.0.113.7".into(),
            user_agent: "Passkey browser".into(),
        }),
    })
    .await
}

/// A whole passkey login on the app's page.
async fn passkey_login(
    app: &TestApp,
    device: &mut Authenticator,
    email: &str,
) -> Result<proto::FinishPasskeyLoginResponse, ApiError> {
    let started = start_login(&app.api, email).await.unwrap();
    let assertion = device.sign_in(ORIGIN, &started);
    finish_login(&app.api, &started.ceremony_id, assertion).await
}

async fn list(api: &ApiClient, access_token: &str) -> Vec<proto::Passkey> {
    api.list_passkeys(proto::ListPasskeysRequest {
        access_token: access_token.into(),
    })
    .await
    .expect("ListPasskeys")
    .passkeys
}

/// The claim names of a JWT (read without verifying: the signature is
/// checked separately against the JWKS).
fn claim_names(jwt: &str) -> BTreeSet<String> {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).unwrap();
    claims.keys().cloned().collect()
}

fn assert_code(result: Result<impl std::fmt::Debug, ApiError>, code: &str) -> ApiError {
    let error = result.expect_err("refused");
    assert_eq!(error.code, code, "{error:?}");
    error
}

async fn a_passkey_added_after_an_email_login_signs_in_alone(case: Case) {
    let app = spawn(case).await;
    let Registered {
        mut device,
        login,
        passkey,
    } = register(&app, "ada@example.com").await;
    assert_eq!(passkey.name, "Work laptop");
    assert!(passkey.last_used_at.is_none() && passkey.counter_regressed_at.is_none());

    // The registration options are the browser's, for this user and site.
    let started = start_registration(&app.api, &token(&login)).await.unwrap();
    let options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], "app.test");
    assert_eq!(options["publicKey"]["user"]["name"], "ada@example.com");
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );
    assert_eq!(
        options["publicKey"]["excludeCredentials"][0]["id"],
        passkey.credential_id.as_str(),
        "the user's passkeys are excluded"
    );

    let signed_in = passkey_login(&app, &mut device, "ada@example.com")
        .await
        .expect("FinishPasskeyLogin");
    let user = signed_in.user.clone().unwrap();
    assert_eq!(user, login.verify.user.clone().unwrap());
    assert!(!signed_in.new_user);
    assert_eq!(signed_in.token_type, "Bearer");
    assert_ne!(signed_in.session_id, login.session_id, "a new session");

    // The access token verifies against the JWKS with Verify's claims.
    let (_, claims) = verify_with_jwks(&app, &signed_in.token).await;
    let (_, by_code) = verify_with_jwks(&app, &login.verify.token).await;
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.sid, signed_in.session_id);
    assert_eq!(
        (&claims.iss, &claims.aud, &claims.tid, &claims.email),
        (&by_code.iss, &by_code.aud, &by_code.tid, &by_code.email)
    );
    assert_eq!(
        claim_names(&signed_in.token),
        claim_names(&login.verify.token)
    );
    assert_eq!(claims.exp - claims.iat, i64::from(signed_in.expires_in));

    // The session is a real one: listed with its client, refreshable.
    let sessions = app
        .api
        .list_sessions(proto::ListSessionsRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap()
        .sessions;
    let session = sessions
        .iter()
        .find(|s| s.id == signed_in.session_id)
        .unwrap();
    assert_eq!(session.state(), proto::SessionState::Active);
    assert_eq!(session.client.clone().unwrap().ip, "203.0.113.7");
    let refreshed = app.refresh(&signed_in.refresh_token).await.unwrap();
    verify_with_jwks(&app, &refreshed.token).await;

    // The passkey shows its use; the login's token lists it too.
    let listed = list(&app.api, &signed_in.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, passkey.id);
    assert!(listed[0].last_used_at.is_some());

    // And it signs in again (its counter moved on).
    passkey_login(&app, &mut device, "ada@example.com")
        .await
        .expect("a second passkey login");
}

async fn discoverable_login_finds_the_user_from_the_passkey(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    let mut bob = register(&app, "bob@example.com").await;
    // No address: the passkey alone says who signs in.
    for (who, email) in [(&mut ada, "ada@example.com"), (&mut bob, "bob@example.com")] {
        let signed_in = passkey_login(&app, &mut who.device, "").await.unwrap();
        assert_eq!(signed_in.user.unwrap().email, email);
        let (_, claims) = verify_with_jwks(&app, &signed_in.token).await;
        assert_eq!(claims.email, email);
    }
    // With an address, only that account's passkey finishes the login.
    let started = start_login(&app.api, "ada@example.com").await.unwrap();
    let bobs = bob.device.sign_in(ORIGIN, &started);
    assert_code(
        finish_login(&app.api, &started.ceremony_id, bobs).await,
        "PASSKEY_INVALID",
    );
}

async fn a_deleted_passkey_no_longer_signs_in(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    let bob = app.login("bob@example.com").await;
    let delete = |access_token: String, passkey_id: String| {
        app.api.delete_passkey(proto::DeletePasskeyRequest {
            access_token,
            passkey_id,
        })
    };
    // Another user cannot delete it (it is not theirs: not found).
    assert_code(
        delete(token(&bob), ada.passkey.id.clone()).await,
        "PASSKEY_NOT_FOUND",
    );
    delete(token(&ada.login), ada.passkey.id.clone())
        .await
        .expect("DeletePasskey");
    assert!(list(&app.api, &token(&ada.login)).await.is_empty());
    assert_code(
        delete(token(&ada.login), ada.passkey.id.clone()).await,
        "PASSKEY_NOT_FOUND",
    );
    assert_code(
        passkey_login(&app, &mut ada.device, "ada@example.com").await,
        "PASSKEY_INVALID",
    );
    // Email login remains.
    app.login("ada@example.com").await;

    // Deleting the user deletes their passkeys (and ceremonies) with them.
    let mut bea = register(&app, "bea@example.com").await;
    let started = start_registration(&app.api, &token(&bea.login))
        .await
        .unwrap();
    let bea_id = bea.login.verify.user.clone().unwrap().id;
    app.admin.delete_user("default", &bea_id).await.unwrap();
    assert_code(
        passkey_login(&app, &mut bea.device, "").await,
        "PASSKEY_INVALID",
    );
    let credential = Authenticator::new()
        .create(ORIGIN, &started.options_json)
        .unwrap();
    assert_code(
        finish_registration(
            &app.api,
            &token(&bea.login),
            &started.ceremony_id,
            credential,
        )
        .await,
        "ACCESS_TOKEN_INVALID",
    );
}

async fn answers_from_another_origin_or_relying_party_are_refused(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;

    // A page of an origin that is not allowed (though within the site).
    let started = start_login(&app.api, "").await.unwrap();
    let phished = ada.device.sign_in("https://evil.app.test", &started);
    let error = assert_code(
        finish_login(&app.api, &started.ceremony_id, phished).await,
        "PASSKEY_INVALID",
    );
    error.assert_status(tonic::Code::Unauthenticated, 401);

    // A signature for another relying-party id.
    let started = start_login(&app.api, "").await.unwrap();
    let mut options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
    options["publicKey"]["rpId"] = "login.app.test".into();
    let other_rp = ada
        .device
        .get("https://login.app.test", &options.to_string())
        .unwrap();
    assert_code(
        finish_login(
            &app.api,
            &started.ceremony_id,
            serde_json::to_string(&other_rp).unwrap(),
        )
        .await,
        "PASSKEY_INVALID",
    );

    // Registration from a foreign origin is refused the same way, and
    // stores nothing.
    let started = start_registration(&app.api, &token(&ada.login))
        .await
        .unwrap();
    let mut device = Authenticator::new();
    let credential = device
        .create("https://evil.app.test", &started.options_json)
        .unwrap();
    assert_code(
        finish_registration(
            &app.api,
            &token(&ada.login),
            &started.ceremony_id,
            credential,
        )
        .await,
        "PASSKEY_INVALID",
    );
    assert_eq!(list(&app.api, &token(&ada.login)).await.len(), 1);

    // The real page still works.
    passkey_login(&app, &mut ada.device, "").await.unwrap();
}

async fn a_ceremony_works_once_and_a_tampered_signature_spends_it(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;

    let started = start_login(&app.api, "ada@example.com").await.unwrap();
    let assertion = ada.device.sign_in(ORIGIN, &started);
    finish_login(&app.api, &started.ceremony_id, assertion.clone())
        .await
        .unwrap();
    // The same assertion again: the ceremony is used up.
    let error = assert_code(
        finish_login(&app.api, &started.ceremony_id, assertion).await,
        "PASSKEY_CEREMONY_INVALID",
    );
    error.assert_status(tonic::Code::Unauthenticated, 401);

    // A tampered signature is refused, and spends its ceremony: the genuine
    // answer cannot follow it.
    let started = start_login(&app.api, "ada@example.com").await.unwrap();
    let genuine = ada.device.get(ORIGIN, &started.options_json).unwrap();
    let mut tampered = genuine.clone();
    let last = tampered.response.signature.len() - 1;
    tampered.response.signature[last] ^= 0x01;
    assert_code(
        finish_login(
            &app.api,
            &started.ceremony_id,
            serde_json::to_string(&tampered).unwrap(),
        )
        .await,
        "PASSKEY_INVALID",
    );
    assert_code(
        finish_login(
            &app.api,
            &started.ceremony_id,
            serde_json::to_string(&genuine).unwrap(),
        )
        .await,
        "PASSKEY_CEREMONY_INVALID",
    );

    // Malformed input is bad input and spends nothing.
    let started = start_login(&app.api, "").await.unwrap();
    let error = assert_code(
        finish_login(&app.api, &started.ceremony_id, "{not json".into()).await,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        error.field,
        crate::helpers::field_name(app.api.transport(), "credential_json")
    );
    let assertion = ada.device.sign_in(ORIGIN, &started);
    finish_login(&app.api, &started.ceremony_id, assertion)
        .await
        .expect("the ceremony was not spent by bad input");
}

async fn an_expired_ceremony_is_refused(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;

    let login = start_login(&app.api, "").await.unwrap();
    let registration = start_registration(&app.api, &token(&ada.login))
        .await
        .unwrap();
    let assertion = ada.device.sign_in(ORIGIN, &login);
    let mut other = Authenticator::new();
    let credential = other.create(ORIGIN, &registration.options_json).unwrap();
    app.clock
        .advance(Duration::from_secs(5 * 60) + Duration::from_millis(1));
    assert_code(
        finish_login(&app.api, &login.ceremony_id, assertion).await,
        "PASSKEY_CEREMONY_INVALID",
    );
    // (The access token lives longer than a ceremony: it still works.)
    assert_code(
        finish_registration(
            &app.api,
            &token(&ada.login),
            &registration.ceremony_id,
            credential,
        )
        .await,
        "PASSKEY_CEREMONY_INVALID",
    );
    assert_eq!(list(&app.api, &token(&ada.login)).await.len(), 1);
}

async fn another_tenants_ceremony_is_unknown(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    let (_, shop) = app
        .tenant(
            "shop",
            TenantSettings {
                passkey_rp_id: Some("shop.test".into()),
                passkey_origins: Some(vec!["https://shop.test".into()]),
                ..Default::default()
            },
        )
        .await;

    let started = start_login(&app.api, "").await.unwrap();
    let assertion = ada.device.sign_in(ORIGIN, &started);
    assert_code(
        finish_login(&shop, &started.ceremony_id, assertion.clone()).await,
        "PASSKEY_CEREMONY_INVALID",
    );
    // Untouched for its own tenant.
    finish_login(&app.api, &started.ceremony_id, assertion)
        .await
        .expect("the ceremony is still the default tenant's");

    // The shop's own relying party: its options name its site.
    let shop_started = start_login(&shop, "").await.unwrap();
    let options: serde_json::Value = serde_json::from_str(&shop_started.options_json).unwrap();
    assert_eq!(options["publicKey"]["rpId"], "shop.test");
    // A default-tenant passkey is unknown there.
    let mut options = options;
    options["publicKey"]["rpId"] = "app.test".into();
    let foreign = ada.device.get(ORIGIN, &options.to_string()).unwrap();
    assert_code(
        finish_login(
            &shop,
            &shop_started.ceremony_id,
            serde_json::to_string(&foreign).unwrap(),
        )
        .await,
        "PASSKEY_INVALID",
    );
    // A tenant's origins must lie within its relying-party id.
    let refused = app
        .admin
        .update_tenant(
            "shop",
            None,
            &TenantSettings {
                passkey_origins: Some(vec!["https://evil.test".into()]),
                ..Default::default()
            },
            &[],
        )
        .await
        .expect_err("an origin outside the relying party");
    assert!(refused.to_string().contains("passkey_origins"), "{refused}");
}

async fn a_counter_regression_is_refused_recorded_and_marks_the_passkey(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    passkey_login(&app, &mut ada.device, "").await.unwrap();
    // A copy of the device as it is now, then the original moves on.
    let mut copy = ada.device.clone_device();
    passkey_login(&app, &mut ada.device, "").await.unwrap();

    // The copy signs with a counter the server has already seen.
    let error = assert_code(
        passkey_login(&app, &mut copy, "").await,
        "PASSKEY_COUNTER_REGRESSED",
    );
    error.assert_status(tonic::Code::PermissionDenied, 403);
    let listed = list(&app.api, &token(&ada.login)).await;
    assert!(
        listed[0].counter_regressed_at.is_some(),
        "the passkey is marked"
    );
    // Recorded in the metrics (this process's recorder, the server's).
    let rendered = latchkey::metrics::handle().render();
    let refused = rendered
        .lines()
        .find(|l| l.starts_with("latchkey_passkey_counter_regressions_total{action=\"refused\"}"))
        .expect("the regression is counted");
    assert!(
        refused
            .split(' ')
            .next_back()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 1.0
    );
    // From now on the passkey is refused, whoever holds it.
    assert_code(
        passkey_login(&app, &mut ada.device, "").await,
        "PASSKEY_COUNTER_REGRESSED",
    );
}

async fn registration_needs_a_valid_access_token_of_the_user(case: Case) {
    let app = spawn(case).await;
    let ada = app.login("ada@example.com").await;
    let bob = app.login("bob@example.com").await;
    let (_, shop) = app.tenant("shop", TenantSettings::default()).await;

    let error = assert_code(start_registration(&app.api, "").await, "INVALID_ARGUMENT");
    assert_eq!(
        error.field,
        crate::helpers::field_name(app.api.transport(), "access_token")
    );
    for bad in ["not-a-token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        let error = assert_code(
            start_registration(&app.api, bad).await,
            "ACCESS_TOKEN_INVALID",
        );
        error.assert_status(tonic::Code::Unauthenticated, 401);
    }
    // Another tenant's app cannot use this tenant's token.
    assert_code(
        start_registration(&shop, &token(&ada)).await,
        "ACCESS_TOKEN_INVALID",
    );
    // A ceremony finishes only for the user who started it.
    let started = start_registration(&app.api, &token(&ada)).await.unwrap();
    let credential = Authenticator::new()
        .create(ORIGIN, &started.options_json)
        .unwrap();
    assert_code(
        finish_registration(
            &app.api,
            &token(&bob),
            &started.ceremony_id,
            credential.clone(),
        )
        .await,
        "PASSKEY_CEREMONY_INVALID",
    );
    // A logged-out session's token no longer works.
    app.revoke(&ada.verify.refresh_token, "").await.unwrap();
    assert_code(
        finish_registration(&app.api, &token(&ada), &started.ceremony_id, credential).await,
        "ACCESS_TOKEN_INVALID",
    );
    assert_code(
        start_registration(&app.api, &token(&ada)).await,
        "ACCESS_TOKEN_INVALID",
    );
    assert!(list(&app.api, &token(&bob)).await.is_empty());
}

/// The options with their one random value blanked.
fn shape(started: &proto::StartPasskeyLoginResponse) -> serde_json::Value {
    let mut options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
    options["publicKey"]["challenge"] = "…".into();
    options
}

async fn a_passkey_login_answers_the_same_for_any_address(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    app.login("bob@example.com").await;

    let with_passkey = start_login(&app.api, "ada@example.com").await.unwrap();
    let without_passkey = start_login(&app.api, "bob@example.com").await.unwrap();
    let unknown = start_login(&app.api, "nobody@example.com").await.unwrap();
    let anyone = start_login(&app.api, "").await.unwrap();
    assert_eq!(shape(&with_passkey), shape(&without_passkey));
    assert_eq!(shape(&with_passkey), shape(&unknown));
    assert_eq!(shape(&with_passkey), shape(&anyone));
    assert_eq!(
        shape(&with_passkey)["publicKey"]["allowCredentials"],
        serde_json::json!([])
    );

    // Nothing finishes an unknown address's login, not even a real passkey.
    let assertion = ada.device.sign_in(ORIGIN, &unknown);
    assert_code(
        finish_login(&app.api, &unknown.ceremony_id, assertion).await,
        "PASSKEY_INVALID",
    );
    // A malformed address is bad input, as for StartAuth.
    assert_code(
        start_login(&app.api, "not an address").await,
        "INVALID_ARGUMENT",
    );
}

async fn without_a_relying_party_passkeys_are_not_configured(case: Case) {
    let app = spawn_app_with(case, |s| s.passkey_rp_id = "off".into()).await;
    let ada = app.login("ada@example.com").await;
    let error = assert_code(start_login(&app.api, "").await, "PASSKEYS_NOT_CONFIGURED");
    error.assert_status(tonic::Code::FailedPrecondition, 409);
    assert_code(
        start_registration(&app.api, &token(&ada)).await,
        "PASSKEYS_NOT_CONFIGURED",
    );
    // A tenant may set its own relying party.
    let (_, shop) = app
        .tenant(
            "shop",
            TenantSettings {
                passkey_rp_id: Some("shop.test".into()),
                ..Default::default()
            },
        )
        .await;
    let started = start_login(&shop, "").await.unwrap();
    let options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
    assert_eq!(options["publicKey"]["rpId"], "shop.test");
}

async fn failed_assertions_spend_the_wrong_code_budget(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.passkey_rp_id = "app.test".into();
        s.passkey_origins = vec![ORIGIN.into()];
        s.verify_failure_budget = 2;
        s.verify_backoff_max = Duration::from_secs(4);
    })
    .await;
    let mut ada = register(&app, "ada@example.com").await;
    for _ in 0..2 {
        let started = start_login(&app.api, "").await.unwrap();
        let phished = ada.device.sign_in("https://evil.app.test", &started);
        assert_code(
            finish_login(&app.api, &started.ceremony_id, phished).await,
            "PASSKEY_INVALID",
        );
    }
    // The budget is spent: even the genuine passkey waits out the backoff,
    // and the refused attempt leaves its ceremony usable.
    let started = start_login(&app.api, "").await.unwrap();
    let genuine = ada.device.sign_in(ORIGIN, &started);
    let error = assert_code(
        finish_login(&app.api, &started.ceremony_id, genuine.clone()).await,
        "RATE_LIMITED",
    );
    assert!(error.retry_after.is_some());
    app.clock.advance(Duration::from_secs(4));
    finish_login(&app.api, &started.ceremony_id, genuine)
        .await
        .expect("after the backoff");
}

async fn zero_configuration_serves_pages_on_any_localhost_port(case: Case) {
    // The defaults: relying party `localhost`, no origins configured.
    let app = spawn_app(case).await;
    let login = app.login("ada@example.com").await;
    let mut device = Authenticator::new();
    let started = start_registration(&app.api, &token(&login)).await.unwrap();
    let options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
    let credential = device
        .create("http://localhost:3000", &started.options_json)
        .unwrap();
    finish_registration(&app.api, &token(&login), &started.ceremony_id, credential)
        .await
        .unwrap();
    let started = start_login(&app.api, "").await.unwrap();
    let assertion = device.sign_in("http://localhost:5173", &started);
    finish_login(&app.api, &started.ceremony_id, assertion)
        .await
        .expect("any localhost port");
    // Not another site, even one the authenticator would sign for.
    let started = start_login(&app.api, "").await.unwrap();
    let assertion = device.sign_in("https://localhost", &started);
    assert_code(
        finish_login(&app.api, &started.ceremony_id, assertion).await,
        "PASSKEY_INVALID",
    );
}

async fn racing_finishes_of_one_ceremony_make_one_session(case: Case) {
    let app = spawn(case).await;
    let mut ada = register(&app, "ada@example.com").await;
    let started = start_login(&app.api, "").await.unwrap();
    let assertion = ada.device.sign_in(ORIGIN, &started);
    let finishes: Vec<_> = (0..6)
        .map(|_| {
            let api = app.api.clone();
            let (id, assertion) = (started.ceremony_id.clone(), assertion.clone());
            tokio::spawn(async move { finish_login(&api, &id, assertion).await })
        })
        .collect();
    let mut won = 0;
    for finish in finishes {
        match finish.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(e.code, "PASSKEY_CEREMONY_INVALID", "{e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one finish wins");
    let user_id = ada.login.verify.user.unwrap().id;
    let sessions = app
        .api
        .list_sessions(proto::ListSessionsRequest { user_id })
        .await
        .unwrap()
        .sessions;
    assert_eq!(
        sessions.len(),
        2,
        "the email login's and one passkey login's"
    );
}

async fn a_ceremony_started_on_one_replica_finishes_on_another(case: Case) {
    let app = spawn(case).await;
    let replica = spawn_replica(&app, |_| {}).await;
    let login = app.login("ada@example.com").await;
    let mut device = Authenticator::new();

    let started = start_registration(&app.api, &token(&login)).await.unwrap();
    let credential = device.create(ORIGIN, &started.options_json).unwrap();
    finish_registration(
        &replica.api,
        &token(&login),
        &started.ceremony_id,
        credential,
    )
    .await
    .expect("registration finished on the other replica");

    let started = start_login(&replica.api, "ada@example.com").await.unwrap();
    let assertion = device.sign_in(ORIGIN, &started);
    let signed_in = finish_login(&app.api, &started.ceremony_id, assertion.clone())
        .await
        .expect("login finished on the first replica");
    verify_with_jwks(&app, &signed_in.token).await;
    // Used up for both.
    assert_code(
        finish_login(&replica.api, &started.ceremony_id, assertion).await,
        "PASSKEY_CEREMONY_INVALID",
    );
}

async fn a_disabled_users_passkey_is_refused_until_they_are_enabled(case: Case) {
    let app = spawn(case).await;
    let Registered {
        mut device, login, ..
    } = register(&app, "ada@example.com").await;
    let user_id = login.verify.user.clone().unwrap().id;
    let users = app.admin.users("default").unwrap();
    users.disable("default", &user_id).await.unwrap();

    // The passkey still proves its holder, who alone learns the user is
    // disabled; no session is made.
    let before = app.snapshot().await;
    assert_code(
        passkey_login(&app, &mut device, "ada@example.com").await,
        "USER_DISABLED",
    );
    let sessions = |snapshot: &[String]| {
        snapshot
            .iter()
            .filter(|row| row.starts_with("session ") || row.starts_with("refresh "))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(sessions(&app.snapshot().await), sessions(&before));

    users.enable("default", &user_id).await.unwrap();
    let signed_in = passkey_login(&app, &mut device, "ada@example.com")
        .await
        .expect("a passkey login once enabled");
    verify_with_jwks(&app, &signed_in.token).await;
}
