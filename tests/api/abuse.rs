//! Abuse protection: rate limits shared by replicas, the wrong-code budget
//! of an address, idempotent starts, resends, and answers that do not tell
//! known addresses from unknown ones.

use std::time::Duration;

use latchkey::{
    auth::tenants::{SignupPolicy, TenantSettings},
    clock::Clock,
    proto::{self, Method, StartAuthRequest},
};
use tonic::Code;

use crate::helpers::{
    ApiClient, ApiError, Case, TestApp, Transport, spawn_app_with, spawn_replica,
};
use crate::matrix;

matrix!(
    sends_per_address_are_limited_across_replicas_and_reset_after_the_window,
    starts_per_client_ip_and_the_tenant_ceiling_are_limited,
    wrong_codes_share_one_budget_per_address_across_resends_and_sessions,
    an_idempotency_key_makes_a_start_happen_once,
    a_resend_replaces_the_proofs_of_a_pending_login,
    limits_answer_known_and_unknown_addresses_alike,
);

/// Moves the clock to just after the start of the next `window`, so every
/// call of a test falls in one window (windows are fixed, aligned to the
/// epoch).
pub(crate) fn to_window_start(clock: &Clock, window: Duration) {
    let w = window.as_millis() as i64;
    let now = clock.now_ms();
    clock.advance(Duration::from_millis((w - now.rem_euclid(w) + 1) as u64));
}

/// Asserts a RATE_LIMITED answer with a hint no longer than `at_most`.
pub(crate) fn assert_limited(err: &ApiError, at_most: Duration) -> Duration {
    assert_eq!(err.code, "RATE_LIMITED", "{err:?}");
    err.assert_status(Code::ResourceExhausted, 429);
    let wait = err
        .retry_after
        .expect("a retry hint (RetryInfo / Retry-After)");
    assert!(
        wait > Duration::ZERO && wait <= at_most,
        "{wait:?} > {at_most:?}"
    );
    wait
}

async fn start(
    api: &ApiClient,
    email: &str,
    ip: &str,
) -> Result<proto::StartAuthResponse, ApiError> {
    api.start_auth(StartAuthRequest {
        email: email.to_owned(),
        method: Method::Code as i32,
        client: Some(proto::ClientInfo {
            ip: ip.to_owned(),
            user_agent: String::new(),
        }),
        ..Default::default()
    })
    .await
}

async fn resend(app: &TestApp, session_id: &str) -> Result<proto::ResendCodeResponse, ApiError> {
    app.api
        .resend_code(proto::ResendCodeRequest {
            session_id: session_id.to_owned(),
        })
        .await
}

/// A code that is certainly wrong.
pub(crate) fn wrong(code: &str) -> String {
    let mut digits: Vec<u8> = code.bytes().collect();
    let last = digits.last_mut().unwrap();
    *last = if *last == b'9' { b'0' } else { *last + 1 };
    String::from_utf8(digits).unwrap()
}

async fn sends_per_address_are_limited_across_replicas_and_reset_after_the_window(case: Case) {
    let window = Duration::from_secs(900);
    let app = spawn_app_with(case, |s| {
        s.rate_limit_email = 3;
        s.rate_limit_window = window;
    })
    .await;
    let replica = spawn_replica(&app, |_| {}).await;
    to_window_start(&app.clock, window);

    // Three emails, through either replica, whatever the client.
    let first = app.start_auth("pat@example.com").await.unwrap();
    replica.start_auth("pat@example.com").await.unwrap();
    start(&app.api, "pat@example.com", "198.51.100.4")
        .await
        .unwrap();
    app.wait_outbox_drained().await;
    let before = app.snapshot().await;

    // The fourth is refused on both, and so is a resend (it is an email too).
    let refused = replica.start_auth("pat@example.com").await.unwrap_err();
    assert_limited(&refused, window);
    assert_limited(
        &app.start_auth("pat@example.com").await.unwrap_err(),
        window,
    );
    assert_limited(&resend(&app, &first.session_id).await.unwrap_err(), window);
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused call changes nothing"
    );

    // Other addresses are not held back.
    app.start_auth("sam@example.com").await.unwrap();
    app.wait_outbox_drained().await;
    assert_eq!(app.smtp.mails_to("pat@example.com").len(), 3);

    // The hint is true: once it has passed, the address may receive mail again.
    let wait = assert_limited(
        &app.start_auth("pat@example.com").await.unwrap_err(),
        window,
    );
    app.clock.advance(wait);
    replica.start_auth("pat@example.com").await.unwrap();
    app.smtp.wait_for_count("pat@example.com", 4).await;
}

async fn starts_per_client_ip_and_the_tenant_ceiling_are_limited(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.rate_limit_ip = 2;
        s.rate_limit_tenant = 5;
    })
    .await;
    let replica = spawn_replica(&app, |_| {}).await;
    // (A 15-minute window start is a minute start too.)
    to_window_start(&app.clock, app.settings.rate_limit_window);
    let window = app.settings.rate_limit_window;
    let ip = "203.0.113.7";

    // Per client IP, whatever the address, through either replica.
    start(&app.api, "a@example.com", ip).await.unwrap();
    start(&replica.api, "b@example.com", ip).await.unwrap();
    assert_limited(
        &start(&app.api, "c@example.com", ip).await.unwrap_err(),
        window,
    );
    assert_limited(
        &start(&replica.api, "c@example.com", "::ffff:203.0.113.7")
            .await
            .unwrap_err(),
        window,
    );
    // IPv6 clients count by /64: rotating addresses inside one gains nothing.
    start(&app.api, "c@example.com", "2001:db8:0:1::1")
        .await
        .unwrap();
    start(&replica.api, "d@example.com", "2001:db8:0:1::2")
        .await
        .unwrap();
    assert_limited(
        &start(&app.api, "e@example.com", "2001:db8:0:1:ffff::3")
            .await
            .unwrap_err(),
        window,
    );

    // The tenant's ceiling: 5 sign-in emails a minute, whichever replica
    // sent them (refused calls above did not count). Each replica adds its
    // count to the shared one about once a second.
    start(&app.api, "e@example.com", "").await.unwrap();
    let pool = app.db_pool().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool
        .strings("SELECT CAST(count AS TEXT) FROM rate_counters WHERE key = 'tenant'")
        .await
        != ["5"]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas never shared their counts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (One more round, so the replica that added first reads the total too.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for server in [&app, &replica] {
        let refused = start(&server.api, "f@example.com", "").await.unwrap_err();
        assert_limited(&refused, Duration::from_secs(60));
    }

    // Another tenant has its own ceiling.
    let (_, shop) = app.tenant("shop", TenantSettings::default()).await;
    start(&shop, "f@example.com", "").await.unwrap();

    // A minute later the ceiling has room again; the IP's 15 minutes have not passed.
    let wait = assert_limited(
        &start(&app.api, "f@example.com", "").await.unwrap_err(),
        Duration::from_secs(60),
    );
    app.clock.advance(wait);
    start(&app.api, "f@example.com", "").await.unwrap();
    start(&replica.api, "g@example.com", "").await.unwrap();
    assert_limited(
        &start(&app.api, "g@example.com", ip).await.unwrap_err(),
        window,
    );
}

async fn wrong_codes_share_one_budget_per_address_across_resends_and_sessions(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.verify_failure_budget = 3;
        s.code_max_attempts = 10;
        s.verify_backoff_max = Duration::from_secs(4);
        s.allowed_validation_urls = vec!["https://app.test/auth".into()];
    })
    .await;
    to_window_start(&app.clock, Duration::from_secs(3600));
    let email = "pat@example.com";
    let newest_code = |n: usize| {
        let smtp = app.smtp.clone();
        async move { smtp.wait_for_count(email, n).await[n - 1].code() }
    };

    // Asking for a new code before each guess gains nothing: after three
    // wrong codes the address must wait, however many codes it was sent.
    let (sid, _) = app.start_and_read_code(email).await;
    let mut mails = 1;
    for _ in 0..3 {
        resend(&app, &sid).await.unwrap();
        mails += 1;
        let code = newest_code(mails).await;
        assert_eq!(
            app.verify(&sid, &wrong(&code)).await.unwrap_err().code,
            "CODE_INVALID"
        );
    }
    resend(&app, &sid).await.unwrap();
    mails += 1;
    let code = newest_code(mails).await;
    let wait = assert_limited(
        &app.verify(&sid, &wrong(&code)).await.unwrap_err(),
        Duration::from_secs(1),
    );
    // The backoff does not look at the code: the right one waits too, and
    // a refused attempt is not counted.
    assert_limited(
        &app.verify(&sid, &code).await.unwrap_err(),
        Duration::from_secs(1),
    );

    // Each further wrong code doubles the wait (2 s, 4 s), up to the cap
    // (4 s here, not 8 s).
    let mut wait = wait;
    for (more_than, at_most) in [(1, 2), (2, 4), (2, 4)] {
        app.clock.advance(wait);
        assert_eq!(
            app.verify(&sid, &wrong(&code)).await.unwrap_err().code,
            "CODE_INVALID"
        );
        wait = assert_limited(
            &app.verify(&sid, &code).await.unwrap_err(),
            Duration::from_secs(at_most),
        );
        assert!(wait > Duration::from_secs(more_than), "{wait:?}");
    }

    // No lockout: whoever holds a freshly sent code may try it once, so the
    // real user signs in at once...
    let (fresh, fresh_code) = app.start_and_read_code(email).await;
    app.verify(&fresh, &fresh_code)
        .await
        .expect("a fresh code's first try");
    // ...but that one try is all a fresh session buys an attacker.
    let (guessed, guessed_code) = app.start_and_read_code(email).await;
    assert_eq!(
        app.verify(&guessed, &wrong(&guessed_code))
            .await
            .unwrap_err()
            .code,
        "CODE_INVALID"
    );
    let wait = assert_limited(
        &app.verify(&guessed, &guessed_code).await.unwrap_err(),
        Duration::from_secs(4),
    );
    // Magic links cannot be guessed, so they never wait.
    let linked = app
        .api
        .start_auth(StartAuthRequest {
            email: email.into(),
            method: Method::Link as i32,
            validation_url: "https://app.test/auth".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = app.smtp.wait_for_count(email, mails + 3).await[mails + 2].link_token();
    let verified = app
        .api
        .verify(proto::VerifyRequest {
            link_token: token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(verified.session_id, linked.session_id);

    // The waiting session's right code works once the wait is over.
    app.clock.advance(wait);
    app.verify(&sid, &code).await.expect("after the backoff");

    // The budget is per window: an hour on, wrong codes are plain wrong again.
    app.clock.advance(Duration::from_secs(3600));
    let (sid, code) = app.start_and_read_code(email).await;
    for _ in 0..2 {
        assert_eq!(
            app.verify(&sid, &wrong(&code)).await.unwrap_err().code,
            "CODE_INVALID"
        );
    }
    app.verify(&sid, &code).await.unwrap();
}

async fn an_idempotency_key_makes_a_start_happen_once(case: Case) {
    let app = spawn_app_with(case, |s| s.rate_limit_email = 2).await;
    let request = |email: &str, key: &str| StartAuthRequest {
        email: email.into(),
        method: Method::Code as i32,
        idempotency_key: key.into(),
        ..Default::default()
    };

    let first = app
        .api
        .start_auth(request("pat@example.com", "order-42"))
        .await
        .unwrap();
    // Retries (more than the address's limit of 2) get the first answer.
    for _ in 0..3 {
        let again = app
            .api
            .start_auth(request("pat@example.com", "order-42"))
            .await
            .unwrap();
        assert_eq!(again, first);
    }
    // The same key for another request is refused, and changes nothing.
    let before = app.snapshot().await;
    let err = app
        .api
        .start_auth(request("sam@example.com", "order-42"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "IDEMPOTENCY_KEY_REUSED");
    err.assert_status(Code::InvalidArgument, 422);
    assert_eq!(
        err.field,
        crate::helpers::field_name(case.transport, "idempotency_key")
    );
    let other_locale = StartAuthRequest {
        locale: "de".into(),
        ..request("pat@example.com", "order-42")
    };
    assert_eq!(
        app.api.start_auth(other_locale).await.unwrap_err().code,
        "IDEMPOTENCY_KEY_REUSED"
    );
    assert_eq!(app.snapshot().await, before);

    // Concurrent first calls with one key: one session, one email.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let api = app.api.clone();
            let req = request("sam@example.com", "order-43");
            tokio::spawn(async move { api.start_auth(req).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap().session_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    app.wait_outbox_drained().await;
    assert_eq!(app.smtp.mails_to("pat@example.com").len(), 1);
    assert_eq!(app.smtp.mails_to("sam@example.com").len(), 1);
    let sessions = app
        .db_pool()
        .await
        .strings("SELECT id FROM auth_sessions ORDER BY id")
        .await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");

    // The answer stays the first one, whatever happened to the login since:
    // a resend, a verification, even the user's deletion.
    resend(&app, &first.session_id).await.unwrap();
    let replay = |email: &'static str| app.api.start_auth(request(email, "order-42"));
    assert_eq!(replay("pat@example.com").await.unwrap(), first);
    // Verify stays strict: a replay of the start does not revive the code.
    let code = app.smtp.wait_for_count("pat@example.com", 2).await[1].code();
    let user = app
        .verify(&first.session_id, &code)
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(replay("pat@example.com").await.unwrap(), first);
    assert_eq!(
        app.verify(&first.session_id, &code).await.unwrap_err().code,
        "CODE_INVALID"
    );
    app.admin.delete_user("default", &user.id).await.unwrap();
    assert_eq!(replay("pat@example.com").await.unwrap(), first);

    // Over HTTP the conventional header works as well as the body field.
    if case.transport == Transport::Http {
        let post = |key: &str| {
            app.http
                .post(format!("{}/auth/start", app.http_base))
                .bearer_auth(&app.key)
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "email": "pat@example.com", "method": "METHOD_CODE" }))
                .send()
        };
        let by_header: serde_json::Value = post("order-42").await.unwrap().json().await.unwrap();
        assert_eq!(by_header["sessionId"], first.session_id.as_str());
        let response = app
            .http
            .post(format!("{}/auth/start", app.http_base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "order-42")
            .json(&serde_json::json!({ "email": "pat@example.com", "idempotencyKey": "order-99" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "header and body disagree");
    }

    // A key lasts 24 hours.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let later = app
        .api
        .start_auth(request("pat@example.com", "order-42"))
        .await
        .unwrap();
    assert_ne!(later.session_id, first.session_id);
    app.smtp.wait_for_count("pat@example.com", 3).await;
}

async fn a_resend_replaces_the_proofs_of_a_pending_login(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.allowed_validation_urls = vec!["https://app.test/auth".into()];
    })
    .await;
    let email = "pat@example.com";
    let started = app
        .api
        .start_auth(StartAuthRequest {
            email: email.into(),
            method: Method::CodeAndLink as i32,
            validation_url: "https://app.test/auth".into(),
            locale: "de".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let old = app.smtp.wait_for(email).await;

    let again = resend(&app, &started.session_id).await.unwrap();
    assert_eq!(again.session_id, started.session_id);
    assert_eq!(again.code_length, started.code_length);
    let new = app.smtp.wait_for_count(email, 2).await.pop().unwrap();
    // The same kind of email, in the same language, with new proofs.
    assert_eq!(
        new.header("Subject")
            .map(|s| s.split_once(' ').unwrap().1.to_owned()),
        old.header("Subject")
            .map(|s| s.split_once(' ').unwrap().1.to_owned())
    );
    assert_ne!(new.link_token(), old.link_token());

    // The old code and link are dead; the new code works, once.
    if new.code() != old.code() {
        assert_eq!(
            app.verify(&started.session_id, &old.code())
                .await
                .unwrap_err()
                .code,
            "CODE_INVALID"
        );
    }
    let old_link = app
        .api
        .verify(proto::VerifyRequest {
            link_token: old.link_token(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(old_link.code, "CODE_INVALID");
    app.verify(&started.session_id, &new.code()).await.unwrap();

    // A resent code never outlives LATCHKEY_CODE_MAX_AGE from the start.
    let (late, _) = app.start_and_read_code("lou@example.com").await;
    let cap = app.clock.now_ms() + app.settings.code_max_age.as_millis() as i64;
    app.clock
        .advance(app.settings.code_max_age - app.settings.code_ttl / 2);
    let resent = resend(&app, &late).await.unwrap();
    let expires = resent.expires_at.unwrap();
    let expires = expires.seconds * 1000 + i64::from(expires.nanos) / 1_000_000;
    assert!(expires <= cap, "{expires} > {cap}");
    app.clock.advance(app.settings.code_ttl);
    assert_eq!(resend(&app, &late).await.unwrap_err().code, "CODE_INVALID");

    // A link goes only where the tenant still allows.
    let linked = app
        .api
        .start_auth(StartAuthRequest {
            email: "lou@example.com".into(),
            method: Method::Link as i32,
            validation_url: "https://app.test/auth".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.admin
        .update_tenant(
            "default",
            None,
            &TenantSettings {
                allowed_validation_urls: Some(vec!["https://app.test/login".into()]),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    let moved = resend(&app, &linked.session_id).await.unwrap_err();
    assert_eq!(moved.code, "VALIDATION_URL_NOT_ALLOWED");

    // A login from before resends existed (no kind of email recorded) is
    // not resent.
    let (old, _) = app.start_and_read_code("old@example.com").await;
    app.db_pool()
        .await
        .exec("UPDATE auth_sessions SET mail_kind = NULL WHERE email = 'old@example.com'")
        .await;
    assert_eq!(resend(&app, &old).await.unwrap_err().code, "CODE_INVALID");

    // Nothing to resend for a finished, unknown or foreign login.
    let (pending, _) = app.start_and_read_code("sam@example.com").await;
    let (_, shop) = app.tenant("shop", TenantSettings::default()).await;
    let before = app.snapshot().await;
    assert_eq!(
        resend(&app, &started.session_id).await.unwrap_err().code,
        "CODE_INVALID"
    );
    assert_eq!(
        resend(&app, &uuid::Uuid::now_v7().to_string())
            .await
            .unwrap_err()
            .code,
        "CODE_INVALID"
    );
    let foreign = shop
        .resend_code(proto::ResendCodeRequest {
            session_id: pending,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code, "CODE_INVALID");
    assert_eq!(
        app.snapshot().await,
        before,
        "refused resends change nothing"
    );
    app.wait_outbox_drained().await;
    assert_eq!(app.smtp.mails_to("sam@example.com").len(), 1);
}

async fn limits_answer_known_and_unknown_addresses_alike(case: Case) {
    let app = spawn_app_with(case, |_| {}).await;
    let (_, closed) = app.tenant("closed", TenantSettings::default()).await;
    // A member signs up while sign-up is open; then the club closes and
    // allows one email per address per window.
    let member = "member@example.com";
    let sid = start(&closed, member, "").await.unwrap().session_id;
    let code = app.smtp.wait_for(member).await.code();
    closed
        .verify(proto::VerifyRequest {
            session_id: sid,
            code,
            ..Default::default()
        })
        .await
        .unwrap();
    app.admin
        .update_tenant(
            "closed",
            None,
            &TenantSettings {
                signup_policy: Some(SignupPolicy::LoginOnly),
                rate_limit_email: Some(1),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    to_window_start(&app.clock, app.settings.rate_limit_window);

    // Accepted alike: the same answer but for the random id and the time.
    let known = start(&closed, member, "").await.unwrap();
    let unknown = start(&closed, "stranger@example.com", "").await.unwrap();
    let shape =
        |r: &proto::StartAuthResponse| (r.session_id.len(), r.code_length, r.expires_at.is_some());
    assert_eq!(shape(&known), shape(&unknown));
    assert_ne!(known.session_id, unknown.session_id);
    // Limited alike: an unknown address's "sends" count the same.
    let known = start(&closed, member, "").await.unwrap_err();
    let unknown = start(&closed, "stranger@example.com", "")
        .await
        .unwrap_err();
    assert_eq!(
        (&known.code, &known.message, known.grpc, known.http),
        (&unknown.code, &unknown.message, unknown.grpc, unknown.http)
    );
    let (a, b) = (known.retry_after.unwrap(), unknown.retry_after.unwrap());
    assert!(a.abs_diff(b) <= Duration::from_secs(1), "{a:?} vs {b:?}");
    assert_limited(&known, app.settings.rate_limit_window);

    // Only the member got mail.
    app.wait_outbox_drained().await;
    assert_eq!(app.smtp.mails_to(member).len(), 2);
    assert!(app.smtp.mails_to("stranger@example.com").is_empty());
}
