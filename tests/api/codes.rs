use std::time::Duration;

use crate::helpers::{Case, spawn_app};
use crate::matrix;

matrix!(
    five_wrong_codes_end_the_session_and_the_right_code_then_fails,
    the_right_code_still_works_after_four_wrong_ones,
    an_expired_code_is_refused_like_a_wrong_one,
    a_code_works_only_once,
    of_twenty_concurrent_verifications_with_the_right_code_exactly_one_succeeds,
    codes_are_never_stored_in_plaintext_and_leave_the_outbox_once_sent,
);

fn wrong(code: &str) -> String {
    // A different code of the same length.
    let last = code.as_bytes()[code.len() - 1];
    let other = if last == b'9' {
        '0'
    } else {
        char::from(last + 1)
    };
    format!("{}{other}", &code[..code.len() - 1])
}

async fn five_wrong_codes_end_the_session_and_the_right_code_then_fails(case: Case) {
    let app = spawn_app(case).await;
    let (sid, code) = app.start_and_read_code("eve@example.com").await;

    for attempt in 1..=4 {
        let err = app.verify(&sid, &wrong(&code)).await.unwrap_err();
        assert_eq!(err.code, "CODE_INVALID", "attempt {attempt}");
        err.assert_status(tonic::Code::Unauthenticated, 401);
    }
    let fifth = app.verify(&sid, &wrong(&code)).await.unwrap_err();
    assert_eq!(fifth.code, "TOO_MANY_ATTEMPTS");

    let right = app.verify(&sid, &code).await.unwrap_err();
    assert_eq!(right.code, "TOO_MANY_ATTEMPTS");
    right.assert_status(tonic::Code::PermissionDenied, 403);
}

async fn the_right_code_still_works_after_four_wrong_ones(case: Case) {
    let app = spawn_app(case).await;
    let (sid, code) = app.start_and_read_code("bob@example.com").await;
    for _ in 0..4 {
        app.verify(&sid, &wrong(&code)).await.unwrap_err();
    }
    app.verify(&sid, &code)
        .await
        .expect("fifth attempt, right code");
}

async fn an_expired_code_is_refused_like_a_wrong_one(case: Case) {
    let app = spawn_app(case).await;
    let (sid, code) = app.start_and_read_code("carol@example.com").await;

    app.clock.advance(Duration::from_secs(10 * 60 + 1));

    let err = app.verify(&sid, &code).await.unwrap_err();
    assert_eq!(err.code, "CODE_INVALID");
}

async fn a_code_works_only_once(case: Case) {
    let app = spawn_app(case).await;
    let (sid, code) = app.start_and_read_code("dave@example.com").await;
    app.verify(&sid, &code).await.unwrap();

    let again = app.verify(&sid, &code).await.unwrap_err();
    assert_eq!(again.code, "CODE_INVALID");

    // Unknown session, and a real code presented with another session: the
    // same answer as a wrong code.
    let unknown = app
        .verify(&uuid::Uuid::now_v7().to_string(), &code)
        .await
        .unwrap_err();
    assert_eq!(unknown.code, "CODE_INVALID");
    let (other_sid, _) = app.start_and_read_code("dave@example.com").await;
    let crossed = app.verify(&other_sid, &code).await;
    // (Unless the new code happens to equal the old one: 1 in a million.)
    if let Err(e) = crossed {
        assert_eq!(e.code, "CODE_INVALID");
    }
}

async fn of_twenty_concurrent_verifications_with_the_right_code_exactly_one_succeeds(case: Case) {
    let app = spawn_app(case).await;
    let (sid, code) = app.start_and_read_code("race@example.com").await;

    let calls = (0..20).map(|_| {
        let api = app.api.clone();
        let (sid, code) = (sid.clone(), code.clone());
        tokio::spawn(async move {
            api.verify(latchkey::proto::VerifyRequest {
                session_id: sid,
                code,
                ..Default::default()
            })
            .await
        })
    });
    let results = futures_join_all(calls).await;

    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "exactly one Verify wins");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code, "CODE_INVALID");
    }
    let snapshot = app.snapshot().await;
    assert_eq!(
        snapshot.iter().filter(|r| r.starts_with("user ")).count(),
        1
    );
    assert_eq!(
        snapshot
            .iter()
            .filter(|r| r.starts_with("refresh "))
            .count(),
        1
    );
}

async fn codes_are_never_stored_in_plaintext_and_leave_the_outbox_once_sent(case: Case) {
    let app = spawn_app(case).await;
    let (_sid, code) = app.start_and_read_code("mallory@example.com").await;

    // The sealed copy the worker needed is gone once the mail is sent.
    let pool = app.db_pool().await;
    let kept = pool
        .strings("SELECT id FROM outbox WHERE state = 'sent' AND payload_sealed IS NOT NULL")
        .await;
    pool.close().await;
    assert!(kept.is_empty(), "sent mail keeps its payload: {kept:?}");

    // Scan every stored hash and blob (and on SQLite the files) for the code.
    let dump = app.raw_dump().await;
    assert!(!dump.is_empty());
    assert!(
        !dump.windows(code.len()).any(|w| w == code.as_bytes()),
        "plaintext code stored"
    );
}

/// Awaits spawned tasks in order.
async fn futures_join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}
