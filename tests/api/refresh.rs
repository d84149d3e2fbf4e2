use std::time::Duration;

use crate::helpers::verify_with_jwks;
use crate::helpers::{Backend, Case, field_name, spawn_app, spawn_app_with};
use crate::matrix;

matrix!(
    refresh_rotates_the_token_and_the_old_one_stops_working,
    a_retry_inside_the_grace_window_gets_the_same_successor,
    reuse_after_the_grace_window_ends_the_whole_session,
    revoke_ends_the_session_and_is_idempotent,
    concurrent_refreshes_with_one_token_all_get_the_same_successor,
);

async fn refresh_rotates_the_token_and_the_old_one_stops_working(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("ana@example.com").await;
    let first = login.verify.refresh_token.clone();

    let refreshed = app.refresh(&first).await.unwrap();
    assert_ne!(refreshed.refresh_token, first);
    assert_eq!(refreshed.token_type, "Bearer");
    assert_eq!(refreshed.expires_in, 900);
    let (_, claims) = verify_with_jwks(&app, &refreshed.token).await;
    assert_eq!(claims.sid, login.session_id);
    assert_eq!(claims.sub, login.verify.user.as_ref().unwrap().id);

    // The successor keeps working, link after link.
    let mut current = refreshed.refresh_token;
    for _ in 0..3 {
        current = app.refresh(&current).await.unwrap().refresh_token;
    }

    // A token never issued is simply invalid.
    let forged = format!("lkr_{}", "A".repeat(43));
    assert_eq!(
        app.refresh(&forged).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
}

async fn a_retry_inside_the_grace_window_gets_the_same_successor(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("bea@example.com").await;
    let first = login.verify.refresh_token;

    let a = app.refresh(&first).await.unwrap();
    app.clock.advance(Duration::from_secs(9));
    let before = app.snapshot().await;
    let b = app.refresh(&first).await.unwrap();

    assert_eq!(b.refresh_token, a.refresh_token, "same successor");
    assert_ne!(b.token, a.token, "a fresh access token");
    assert_eq!(app.snapshot().await, before, "nothing new minted");
    // And the successor is still good.
    app.refresh(&a.refresh_token).await.unwrap();
}

async fn reuse_after_the_grace_window_ends_the_whole_session(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("cy@example.com").await;
    let first = login.verify.refresh_token;
    let successor = app.refresh(&first).await.unwrap().refresh_token;

    app.clock.advance(Duration::from_secs(11));
    let err = app.refresh(&first).await.unwrap_err();
    assert_eq!(err.code, "REFRESH_TOKEN_REUSED");
    err.assert_status(tonic::Code::Unauthenticated, 401);

    // Every token of the session is dead now, the thief's and the owner's.
    assert_eq!(
        app.refresh(&successor).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
    assert_eq!(
        app.refresh(&first).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
    // Other sessions of the same user are untouched.
    let other = app.login("cy@example.com").await;
    app.refresh(&other.verify.refresh_token).await.unwrap();
}

async fn revoke_ends_the_session_and_is_idempotent(case: Case) {
    let app = spawn_app(case).await;

    // By refresh token.
    let a = app.login("dee@example.com").await;
    app.revoke(&a.verify.refresh_token, "").await.unwrap();
    assert_eq!(
        app.refresh(&a.verify.refresh_token).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
    app.revoke(&a.verify.refresh_token, "")
        .await
        .expect("idempotent");

    // By session id (the `sid` claim), with a rotated token in the session.
    let b = app.login("dee@example.com").await;
    let next = app
        .refresh(&b.verify.refresh_token)
        .await
        .unwrap()
        .refresh_token;
    app.revoke("", &b.session_id).await.unwrap();
    assert_eq!(
        app.refresh(&next).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
    app.revoke("", &b.session_id).await.expect("idempotent");

    // Unknown session: nothing to do, not an error.
    app.revoke("", &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap();

    // A token and a session id that disagree: refused, nothing ended.
    let c = app.login("dee@example.com").await;
    let d = app.login("dee@example.com").await;
    let err = app
        .revoke(&c.verify.refresh_token, &d.session_id)
        .await
        .unwrap_err();
    assert_eq!(err.code, "INVALID_ARGUMENT");
    assert_eq!(err.field, field_name(case.transport, "session_id"));
    app.refresh(&c.verify.refresh_token)
        .await
        .expect("c still active");
    app.refresh(&d.verify.refresh_token)
        .await
        .expect("d still active");

    // A pending login can be cancelled: its code stops working.
    let (sid, code) = app.start_and_read_code("dee@example.com").await;
    app.revoke("", &sid).await.unwrap();
    assert_eq!(
        app.verify(&sid, &code).await.unwrap_err().code,
        "CODE_INVALID"
    );
}

async fn concurrent_refreshes_with_one_token_all_get_the_same_successor(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("eli@example.com").await;
    let token = login.verify.refresh_token;

    let handles: Vec<_> = (0..10)
        .map(|_| {
            let api = app.api.clone();
            let token = token.clone();
            tokio::spawn(async move {
                api.refresh(latchkey::proto::RefreshRequest {
                    refresh_token: token,
                })
                .await
                .map(|r| r.refresh_token)
            })
        })
        .collect();
    let mut successors = Vec::new();
    for h in handles {
        successors.push(h.await.unwrap().expect("every concurrent retry succeeds"));
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "one successor for all: {successors:?}");
    let rows = app.snapshot().await;
    assert_eq!(rows.iter().filter(|r| r.starts_with("refresh ")).count(), 2);
}

#[tokio::test]
async fn the_session_has_an_absolute_lifetime_that_caps_access_tokens() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.session_ttl = Duration::from_secs(20 * 60);
    })
    .await;
    let login = app.login("fay@example.com").await;

    // 10 of 20 minutes gone: the new access token lives 10 minutes, not 15.
    app.clock.advance(Duration::from_secs(10 * 60));
    let r = app.refresh(&login.verify.refresh_token).await.unwrap();
    assert!(
        (599..=600).contains(&r.expires_in),
        "expires_in {}",
        r.expires_in
    );

    // Past the session's end: refresh is refused, however recent the token.
    app.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_eq!(
        app.refresh(&r.refresh_token).await.unwrap_err().code,
        "REFRESH_TOKEN_INVALID"
    );
}
