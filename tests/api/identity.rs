//! One mailbox, one identity: every spelling of an address that mail
//! providers deliver to one mailbox is one user, one rate-limit bucket and
//! one wrong-code budget; addresses that cannot be sent (or hide invisible
//! characters) are refused before anything is written; migrating an older
//! database makes its addresses canonical; deleting a user leaves their
//! address nowhere.

use std::{sync::Arc, time::Duration};

use latchkey::{clock::Clock, store::Store};
use tonic::Code;

use crate::abuse::{assert_limited, to_window_start, wrong};
use crate::helpers::{
    Backend, Case, ReceivedMail, SmtpSink, TempDir, TestApp, TestDb, TestPool, Transport,
    spawn_app, spawn_app_with, test_settings,
};
use crate::{both_backends, matrix};

matrix!(
    spellings_of_one_mailbox_are_one_user,
    spellings_of_one_mailbox_share_one_send_limit,
    spellings_of_one_mailbox_share_one_wrong_code_budget,
    unsendable_and_invisible_addresses_are_refused_and_nothing_is_written,
);
both_backends!(
    migrating_makes_stored_addresses_canonical_and_keeps_the_oldest_user,
    deleting_a_user_erases_their_address_everywhere,
);

const CANONICAL: &str = "alice@example.com";

/// Ways to write alice@example.com that every mail provider delivers to one
/// mailbox.
const SPELLINGS: [&str; 6] = [
    "alice@example.com",
    "Alice@example.com",
    "ALICE@EXAMPLE.COM",
    "\"alice\"@example.com",
    "\"al\\ice\"@Example.com",
    " \"ALICE\"@example.COM ",
];

/// StartAuth (code) as `typed`; the session id and the mail it sent.
async fn start_as(app: &TestApp, typed: &str) -> (String, ReceivedMail) {
    let before = app.smtp.mails().len();
    let started = app
        .start_auth(typed)
        .await
        .unwrap_or_else(|e| panic!("StartAuth {typed:?}: {e:?}"));
    app.wait_outbox_drained().await;
    let mails = app.smtp.mails();
    assert_eq!(mails.len(), before + 1, "one mail for {typed:?}");
    (started.session_id, mails[before].clone())
}

async fn spellings_of_one_mailbox_are_one_user(case: Case) {
    let app = spawn_app(case).await;
    let mut user_ids = Vec::new();
    for (i, typed) in SPELLINGS.iter().enumerate() {
        let (session_id, mail) = start_as(&app, typed).await;
        // The mail goes to the one mailbox, in its canonical spelling.
        assert_eq!(mail.to, [CANONICAL], "{typed:?}");
        let verified = app.verify(&session_id, &mail.code()).await.unwrap();
        assert_eq!(verified.new_user, i == 0, "{typed:?}");
        let user = verified.user.unwrap();
        assert_eq!(user.email, CANONICAL, "{typed:?}");
        user_ids.push(user.id);
    }
    user_ids.dedup();
    assert_eq!(user_ids.len(), 1, "{user_ids:?}");

    // Internationalised domains are one domain in Unicode and in ASCII.
    let (sid, mail) = start_as(&app, "bob@Bücher.example").await;
    assert_eq!(mail.to, ["bob@xn--bcher-kva.example"]);
    let first = app.verify(&sid, &mail.code()).await.unwrap();
    let (sid, mail) = start_as(&app, "BOB@xn--BCHER-kva.example").await;
    let second = app.verify(&sid, &mail.code()).await.unwrap();
    assert!(!second.new_user);
    assert_eq!(second.user.unwrap().id, first.user.unwrap().id);

    // The admin surface finds the user by any spelling too.
    let found = app
        .admin
        .find_user("default", "", "\"ALICE\"@Example.com")
        .await
        .unwrap();
    assert_eq!(found.id, user_ids[0]);
}

async fn spellings_of_one_mailbox_share_one_send_limit(case: Case) {
    let window = Duration::from_secs(900);
    let app = spawn_app_with(case, |s| {
        s.rate_limit_email = 3;
        s.rate_limit_window = window;
    })
    .await;
    to_window_start(&app.clock, window);
    for typed in &SPELLINGS[..3] {
        app.start_auth(typed).await.unwrap();
    }
    app.wait_outbox_drained().await;
    let before = app.snapshot().await;
    for typed in &SPELLINGS[3..] {
        let refused = app.start_auth(typed).await.unwrap_err();
        assert_limited(&refused, window);
    }
    assert_eq!(app.snapshot().await, before, "a refused call wrote");
    assert_eq!(app.smtp.mails().len(), 3);
}

async fn spellings_of_one_mailbox_share_one_wrong_code_budget(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.verify_failure_budget = 2;
        s.code_max_attempts = 10;
        s.verify_backoff_max = Duration::from_secs(4);
    })
    .await;
    to_window_start(&app.clock, Duration::from_secs(3600));
    let (a, mail_a) = start_as(&app, "Alice@example.com").await;
    let (b, mail_b) = start_as(&app, "\"al\\ice\"@example.com").await;
    for (sid, mail) in [(&a, &mail_a), (&b, &mail_b)] {
        let refused = app.verify(sid, &wrong(&mail.code())).await.unwrap_err();
        assert_eq!(refused.code, "CODE_INVALID");
    }
    // Two wrong codes, one per spelling, spent the address's budget of two:
    // even the right code now waits.
    assert_limited(
        &app.verify(&b, &mail_b.code()).await.unwrap_err(),
        Duration::from_secs(1),
    );
    assert_limited(
        &app.verify(&a, &mail_a.code()).await.unwrap_err(),
        Duration::from_secs(1),
    );
}

async fn unsendable_and_invisible_addresses_are_refused_and_nothing_is_written(case: Case) {
    let app = spawn_app(case).await;
    app.login("known@example.com").await;
    let before = app.snapshot().await;
    let mails = app.smtp.mails().len();
    for typed in [
        // Valid by RFC 5322, but no mail path delivers them.
        "alice@[127.0.0.1]",
        "alice@[IPv6:::1]",
        "\"a<b>c\"@example.com",
        "\"a@b\"@example.com",
        "\"a..b\"@example.com",
        // Invisible characters: one address on screen, another in the mailbox.
        "al\u{AD}ice@example.com",
        "alice@exam\u{AD}ple.com",
        "al\u{200B}ice@example.com",
        "alice\u{200C}@example.com",
        "ali\u{200D}ce@example.com",
        "alice@example\u{2060}.com",
        "\u{FEFF}alice@example.com",
        "ali\u{202E}ecil@example.com",
        "alice\u{200F}@example.com",
        "alice@exa\u{2066}mple.com",
        // Full-width forms.
        "\u{FF41}lice@example.com",
        "alice@\u{FF45}xample.com",
        "alice\u{FF20}example.com",
    ] {
        let err = app.start_auth(typed).await.unwrap_err();
        assert_eq!(err.code, "INVALID_ARGUMENT", "{typed:?}: {err:?}");
        assert_eq!(err.field, "email", "{typed:?}");
        err.assert_status(Code::InvalidArgument, 400);
    }
    assert_eq!(app.snapshot().await, before, "a refused StartAuth wrote");
    assert_eq!(app.smtp.mails().len(), mails);
}

/// Users written as the release before canonical addresses stored them
/// (local part as typed, domain lower-cased).
const OLD_USERS: &str = "INSERT INTO users (id, tenant_id, email, created_at) VALUES \
    ('00000000-0000-7000-8000-000000000001', 'default', 'Alice@example.com', 1), \
    ('00000000-0000-7000-8000-000000000002', 'default', '\"alice\"@example.com', 2), \
    ('00000000-0000-7000-8000-000000000003', 'default', 'alice@example.com', 3), \
    ('00000000-0000-7000-8000-000000000004', 'default', 'Bob@bücher.example', 4), \
    ('00000000-0000-7000-8000-000000000005', 'default', 'carol@example.com', 5), \
    ('00000000-0000-7000-8000-000000000006', 'default', 'dave@exam\u{AD}ple.com', 6), \
    ('00000000-0000-7000-8000-000000000007', 'shop', 'ALICE@example.com', 7)";

async fn migrating_makes_stored_addresses_canonical_and_keeps_the_oldest_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let old = Store::connect(&db.url, &Default::default()).await.unwrap();
    old.migrate_to(3).await.unwrap();
    let pool = TestPool::connect(&db).await;
    pool.exec("INSERT INTO tenants (id, name, created_at) VALUES ('shop', 'Shop', 0)")
        .await;
    pool.exec(OLD_USERS).await;
    pool.exec(
        "INSERT INTO auth_sessions (id, tenant_id, email, method, state, proof_expires_at, created_at) \
         VALUES ('00000000-0000-7000-8000-0000000000a1', 'default', 'ALICE@example.com', 'code', 'pending', 9, 8)",
    )
    .await;
    pool.exec(
        "INSERT INTO outbox (id, tenant_id, session_id, kind, recipient, state, next_attempt_at, created_at, sent_at) \
         VALUES ('00000000-0000-7000-8000-0000000000b1', 'default', '00000000-0000-7000-8000-0000000000a1', \
         'sign_in', 'ALICE@example.com', 'sent', 8, 8, 8)",
    )
    .await;

    old.migrate(latchkey::auth::email::canonical).await.unwrap();
    old.close().await;
    let users = pool
        .strings("SELECT id || ' ' || tenant_id || ' ' || email FROM users ORDER BY id")
        .await;
    let owner = "00000000-0000-7000-8000-000000000001";
    assert_eq!(
        users,
        [
            format!("{owner} default alice@example.com"),
            format!(
                "00000000-0000-7000-8000-000000000002 default \"alice\"@example.com (superseded by {owner})"
            ),
            format!(
                "00000000-0000-7000-8000-000000000003 default alice@example.com (superseded by {owner})"
            ),
            "00000000-0000-7000-8000-000000000004 default bob@xn--bcher-kva.example".into(),
            "00000000-0000-7000-8000-000000000005 default carol@example.com".into(),
            // No longer a valid address: kept as it was, reachable by id.
            "00000000-0000-7000-8000-000000000006 default dave@exam\u{AD}ple.com".into(),
            // Another tenant's user is another identity.
            "00000000-0000-7000-8000-000000000007 shop alice@example.com".into(),
        ]
    );
    assert_eq!(
        pool.strings("SELECT email FROM auth_sessions").await,
        [CANONICAL]
    );
    assert_eq!(
        pool.strings("SELECT recipient FROM outbox").await,
        [CANONICAL]
    );
    pool.close().await;

    // The server starts on the migrated database (migrating again changes
    // nothing) and any spelling logs in as the oldest user.
    let db = Arc::new(db);
    let smtp = SmtpSink::start();
    let dir = Arc::new(TempDir::new());
    let settings = test_settings(&db, &dir.path, &smtp.url());
    let app =
        crate::helpers::start(settings, db, smtp, dir, Clock::system(), Transport::Grpc).await;
    let (sid, mail) = start_as(&app, "\"ALICE\"@example.com").await;
    let verified = app.verify(&sid, &mail.code()).await.unwrap();
    assert!(!verified.new_user);
    assert_eq!(verified.user.unwrap().id, owner);
    let superseded = app
        .admin
        .find_user("default", "00000000-0000-7000-8000-000000000003", "")
        .await
        .unwrap();
    assert!(superseded.email.contains("superseded"));
}

/// Every text value stored in any table.
async fn every_text_value(app: &TestApp) -> Vec<String> {
    use sqlx::AssertSqlSafe;
    let mut values = Vec::new();
    match app.db_pool().await {
        TestPool::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables {
                let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT CAST(t AS TEXT) FROM {table} t"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                values.extend(rows);
            }
            pool.close().await;
        }
        TestPool::Sqlite(pool) => {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for table in tables {
                let columns: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}') WHERE type = 'TEXT'"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                for column in columns {
                    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
                    )))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    values.extend(rows);
                }
            }
            pool.close().await;
        }
    }
    values
}

async fn deleting_a_user_erases_their_address_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.login("gone@example.com").await;
    let user_id = login.verify.user.unwrap().id;
    // Since then: a login ended by wrong codes, and one still pending.
    let (ended, code) = app.start_and_read_code("gone@example.com").await;
    for _ in 0..5 {
        let _ = app.verify(&ended, &wrong(&code)).await;
    }
    let (pending, code) = app.start_and_read_code("gone@example.com").await;
    app.login("kept@example.com").await;

    app.admin.delete_user("default", &user_id).await.unwrap();

    let values = every_text_value(&app).await;
    let left: Vec<&String> = values.iter().filter(|v| v.contains("gone@")).collect();
    assert!(left.is_empty(), "the address is still stored: {left:?}");
    // (The dump does see addresses: the other user's is there.)
    assert!(values.iter().any(|v| v.contains("kept@example.com")));
    // The pending login went with it.
    assert_eq!(
        app.verify(&pending, &code).await.unwrap_err().code,
        "CODE_INVALID"
    );
    // The address may sign up again, as a new user.
    let again = app.login("gone@example.com").await;
    assert!(again.verify.new_user);
    assert_ne!(again.verify.user.unwrap().id, user_id);
}
