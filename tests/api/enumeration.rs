//! On a login-only tenant nothing tells a known address from an unknown one,
//! even through a slow mail relay: the unknown address's login (whose email
//! is suppressed, or replaced with a "no account" notice) follows the same
//! expiry and attempt rules as the known address's real one.

use std::time::Duration;

use latchkey::{
    auth::tenants::{SignupPolicy, TenantSettings},
    proto,
};

use crate::helpers::{ApiClient, Case, spawn_app_with};
use crate::matrix;

/// Slower than the second after which delivery moves a proof's expiry.
const RELAY: Duration = Duration::from_secs(4);

matrix!(
    a_suppressed_login_expires_and_locks_like_a_real_one,
    a_no_account_notice_expires_and_locks_like_a_real_one,
);

async fn a_suppressed_login_expires_and_locks_like_a_real_one(case: Case) {
    side_by_side(case, false).await;
}

async fn a_no_account_notice_expires_and_locks_like_a_real_one(case: Case) {
    side_by_side(case, true).await;
}

async fn side_by_side(case: Case, notify_unknown_address: bool) {
    let app = spawn_app_with(case, |s| s.smtp_timeout = Duration::from_secs(10)).await;
    app.smtp.set_delay(RELAY);
    let member = "member@example.com";
    let stranger = "stranger@example.com";
    // The member signs up while the tenant still allows it.
    let (_, closed) = app.tenant("closed", TenantSettings::default()).await;
    let first = start(&closed, member).await;
    let code = app.smtp.wait_for(member).await.code();
    verify(&closed, &first, &code).await.expect("sign-up");
    app.admin
        .update_tenant(
            "closed",
            None,
            &TenantSettings {
                signup_policy: Some(SignupPolicy::LoginOnly),
                notify_unknown_address: Some(notify_unknown_address),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();

    // Both start at once; the relay takes RELAY for each email, so neither
    // is accepted before `began + RELAY` (in one batch or one after the
    // other).
    let began = app.clock.now_ms();
    let (known, unknown) = tokio::join!(start(&closed, member), start(&closed, stranger));
    let real = app.smtp.wait_for_count(member, 2).await[1].code();
    if notify_unknown_address {
        app.smtp.wait_for(stranger).await;
    }
    app.wait_outbox_drained().await;

    // Past the nominal expiry (counted from StartAuth), within the time the
    // real email's delivery granted (counted from the relay's acceptance).
    let target = began + latchkey::clock::millis(app.settings.code_ttl + RELAY / 2);
    let ahead = u64::try_from(target - app.clock.now_ms()).expect("target ahead");
    app.clock.advance(Duration::from_millis(ahead));
    let wrong = if real == "000000" { "111111" } else { "000000" };
    let known = five_wrong_codes(&closed, &known, wrong).await;
    let unknown = five_wrong_codes(&closed, &unknown, wrong).await;
    let locked = ["CODE_INVALID"; 4]
        .into_iter()
        .chain(["TOO_MANY_ATTEMPTS"])
        .collect::<Vec<_>>();
    assert_eq!(known, locked, "the known address's code still counted");
    assert_eq!(unknown, known, "unknown and known addresses answer alike");
}

async fn start(client: &ApiClient, email: &str) -> String {
    client
        .start_auth(proto::StartAuthRequest {
            email: email.to_owned(),
            method: proto::Method::Code as i32,
            ..Default::default()
        })
        .await
        .expect("StartAuth")
        .session_id
}

async fn verify(
    client: &ApiClient,
    session_id: &str,
    code: &str,
) -> Result<proto::VerifyResponse, crate::helpers::ApiError> {
    client
        .verify(proto::VerifyRequest {
            session_id: session_id.to_owned(),
            code: code.to_owned(),
            ..Default::default()
        })
        .await
}

async fn five_wrong_codes(client: &ApiClient, session_id: &str, wrong: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..5 {
        let err = verify(client, session_id, wrong).await.unwrap_err();
        answers.push(err.code);
    }
    answers
}
