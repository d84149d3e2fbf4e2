//! How the outbox deals with a relay that is slow to answer: per-command
//! timeouts, a message the relay may have taken is not sent twice, and each
//! accepted email is recorded (its code working) as soon as it is accepted.

use std::time::Duration;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app_with};

both_backends!(
    a_slow_answer_to_the_end_of_a_message_is_awaited_not_resent,
    a_message_the_relay_never_confirmed_is_not_sent_again_at_once,
    a_code_works_as_soon_as_its_email_is_accepted_whatever_else_is_being_sent,
    a_slow_relay_gets_as_many_emails_at_once_as_configured,
    a_send_longer_than_the_lease_keeps_its_claim,
    emails_waiting_for_a_retry_go_out_soon_after_the_relay_recovers,
    a_code_whose_email_may_have_been_delivered_works_from_then,
);

/// Polls `what` every 20 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, mut what: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if what().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the outbox has recorded exactly `n` emails as sent within `within`.
async fn sent_within(app: &TestApp, n: i64, within: Duration) -> bool {
    eventually(within, || async {
        app.store.outbox_counts().await.unwrap().sent == n
    })
    .await
}

async fn a_slow_answer_to_the_end_of_a_message_is_awaited_not_resent(backend: Backend) {
    // Each command must be answered within 1 s; the end of the message may
    // take up to 5 s. The relay takes 2 s to answer the end of the message.
    let app = spawn_app_with(backend, |s| {
        s.smtp_timeout = Duration::from_secs(1);
        s.smtp_send_timeout = Duration::from_secs(5);
        s.outbox_retry_base = Duration::from_millis(100);
    })
    .await;
    app.smtp.set_delay(Duration::from_secs(2));
    app.start_auth("slow@example.com").await.unwrap();

    assert!(
        sent_within(&app, 1, Duration::from_secs(8)).await,
        "never recorded as sent: {:?}",
        app.outbox_errors().await
    );
    assert_eq!(app.smtp.mails_to("slow@example.com").len(), 1, "one copy");
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.queued, counts.dead), (0, 0));
}

async fn a_message_the_relay_never_confirmed_is_not_sent_again_at_once(backend: Backend) {
    // The relay takes the whole message but answers its end only after 3 s;
    // latchkey waits 1 s for that answer.
    let app = spawn_app_with(backend, |s| {
        s.smtp_timeout = Duration::from_secs(1);
        s.smtp_send_timeout = Duration::from_secs(1);
        s.outbox_retry_base = Duration::from_millis(100);
        s.outbox_poll_interval = Duration::from_millis(100);
    })
    .await;
    app.smtp.set_delay(Duration::from_secs(3));
    app.start_auth("unsure@example.com").await.unwrap();

    // The relay did take it...
    app.smtp.wait_for("unsure@example.com").await;
    // ...and latchkey recorded that it may have, and holds the message back.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.outbox_errors()
                .await
                .iter()
                .any(|e| e.contains("not confirmed") && e.contains("10 minutes"))
        })
        .await,
        "{:?}",
        app.outbox_errors().await
    );
    // A plain temporary failure would be retried within 100-200 ms; this
    // one is not (the retry base is 100 ms, so 1 s is ample).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.smtp.mails_to("unsure@example.com").len(), 1);
    assert_eq!(app.store.outbox_counts().await.unwrap().queued, 1);

    // Ten minutes on, it is sent again (the relay is quick now) and recorded.
    app.smtp.set_delay(Duration::ZERO);
    app.clock.advance(Duration::from_secs(601));
    assert!(
        sent_within(&app, 1, Duration::from_secs(5)).await,
        "{:?}",
        app.outbox_errors().await
    );
    assert_eq!(app.smtp.mails_to("unsure@example.com").len(), 2);
}

async fn a_code_works_as_soon_as_its_email_is_accepted_whatever_else_is_being_sent(
    backend: Backend,
) {
    // Codes live 4 s from acceptance by the relay.
    let app = spawn_app_with(backend, |s| {
        s.code_ttl = Duration::from_secs(4);
        s.code_max_age = Duration::from_secs(120);
    })
    .await;
    app.smtp
        .set_delay_for("blocker@example.com", Duration::from_secs(3));
    app.smtp
        .set_delay_for("slow@example.com", Duration::from_secs(8));
    app.smtp
        .set_delay_for("fast@example.com", Duration::from_secs(2));

    // While the worker sends the blocker's email, two more logins queue up:
    // the worker's next batch holds both.
    app.start_auth("blocker@example.com").await.unwrap();
    let pool = app.db_pool().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            pool.strings("SELECT CAST(attempts AS TEXT) FROM outbox")
                .await
                .contains(&"1".to_owned())
        })
        .await
    );
    app.start_auth("slow@example.com").await.unwrap();
    let fast = app.start_auth("fast@example.com").await.unwrap();

    // The fast one is accepted about 5 s after its login started, past its
    // nominal 4 s: its code works once the relay has accepted it...
    let mail = app.smtp.wait_for("fast@example.com").await;
    assert!(
        eventually(Duration::from_millis(1500), || async {
            pool.strings(
                "SELECT recipient FROM outbox WHERE state = 'sent' AND recipient = 'fast@example.com'",
            )
            .await
            .len()
                == 1
        })
        .await,
        "the accepted email was not recorded while the slow one was still being sent"
    );
    assert!(
        app.smtp.mails_to("slow@example.com").is_empty(),
        "the slow email is still on its way"
    );
    app.verify(&fast.session_id, &mail.code())
        .await
        .expect("the code works as soon as its email was accepted");
    pool.close().await;
}

async fn a_slow_relay_gets_as_many_emails_at_once_as_configured(backend: Backend) {
    // A relay that takes 500 ms per message, and 12 emails at once.
    let app = spawn_app_with(backend, |s| s.smtp_max_connections = 12).await;
    app.smtp.set_delay(Duration::from_millis(500));
    let logins: Vec<_> = (0..24)
        .map(|i| {
            let api = app.api.clone();
            async move {
                api.start_auth(latchkey::proto::StartAuthRequest {
                    email: format!("user{i}@example.com"),
                    method: latchkey::proto::Method::Code as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
            }
        })
        .collect();
    futures_util::future::join_all(logins).await;
    assert!(
        sent_within(&app, 24, Duration::from_secs(20)).await,
        "not every email went out"
    );
    // More than the old fixed 8 were in flight at once, never more than 12.
    let most = app.smtp.most_in_flight();
    assert!((9..=12).contains(&most), "{most} at once");
}

async fn a_send_longer_than_the_lease_keeps_its_claim(backend: Backend) {
    // Claims hold 1 s; the relay takes 4 s to accept the message; a second
    // replica polls every 100 ms for emails whose claim has run out.
    let app = spawn_app_with(backend, |s| {
        s.outbox_lease = Duration::from_secs(1);
        s.smtp_timeout = Duration::from_secs(2);
        s.smtp_send_timeout = Duration::from_secs(10);
    })
    .await;
    let replica = crate::helpers::spawn_replica(&app, |_| {}).await;
    app.smtp.set_delay(Duration::from_secs(4));
    let pool = app.db_pool().await;
    app.start_auth("long@example.com").await.unwrap();

    app.smtp.wait_for("long@example.com").await;
    assert!(
        sent_within(&app, 1, Duration::from_secs(5)).await,
        "{:?}",
        app.outbox_errors().await
    );
    // Nobody took it over while it was being sent: one claim, one copy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.smtp.mails_to("long@example.com").len(), 1);
    assert_eq!(
        pool.strings("SELECT CAST(attempts AS TEXT) FROM outbox")
            .await,
        ["1"]
    );
    pool.close().await;
    drop(replica);
}

async fn emails_waiting_for_a_retry_go_out_soon_after_the_relay_recovers(backend: Backend) {
    // Nothing listens at the relay's address yet; a failed send is retried
    // only 30-60 s later.
    let relay = crate::helpers::SmtpSink::reserve_addr();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(latchkey::config::Secret::new(format!("smtp://{relay}")));
        s.smtp_timeout = Duration::from_secs(1);
        s.outbox_retry_base = Duration::from_secs(60);
        s.outbox_retry_max = Duration::from_secs(120);
    })
    .await;
    let who = ["a@example.com", "b@example.com", "c@example.com"];
    for email in who {
        app.start_auth(email).await.unwrap();
    }
    // Each was tried, and waits for its retry.
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.outbox_errors().await.len() == 3
        })
        .await,
        "{:?}",
        app.outbox_errors().await
    );

    let sink = crate::helpers::SmtpSink::start_at(relay);
    let back = tokio::time::Instant::now();
    for email in who {
        sink.wait_for(email).await;
    }
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "{took:?} after the relay came back"
    );
    assert!(sent_within(&app, 3, Duration::from_secs(5)).await);
    for email in who {
        assert_eq!(sink.mails_to(email).len(), 1, "{email}");
    }
}

async fn a_code_whose_email_may_have_been_delivered_works_from_then(backend: Backend) {
    // Codes work 10 s from delivery (at most 2 min after StartAuth).
    let relay = crate::helpers::SmtpSink::reserve_addr();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(latchkey::config::Secret::new(format!("smtp://{relay}")));
        s.smtp_timeout = Duration::from_secs(1);
        s.smtp_send_timeout = Duration::from_secs(1);
        s.code_ttl = Duration::from_secs(10);
        s.code_max_age = Duration::from_secs(120);
    })
    .await;
    let started = app.start_auth("maybe@example.com").await.unwrap();
    // Nothing listens at the relay yet: the first attempt fails.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !app.outbox_errors().await.is_empty()
        })
        .await
    );
    // 20 s on (past the code's first 10 s), a relay comes up that takes the
    // message but answers its end too late: latchkey cannot tell whether
    // it was accepted.
    app.clock.advance(Duration::from_secs(20));
    let sink = crate::helpers::SmtpSink::start_at(relay);
    sink.set_delay(Duration::from_secs(3));
    let mail = sink.wait_for("maybe@example.com").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.outbox_errors()
                .await
                .iter()
                .any(|e| e.starts_with(latchkey::store::UNCONFIRMED))
        })
        .await,
        "{:?}",
        app.outbox_errors().await
    );
    // It was delivered: its code works, as if the relay had said so.
    app.verify(&started.session_id, &mail.code())
        .await
        .expect("the code of an email that may have been delivered works");
}

/// A replica is killed (SIGKILL) while sending: another replica sends the
/// email it had claimed once the claim's lease runs out, not minutes later.
#[tokio::test]
async fn a_killed_replicas_claimed_email_goes_out_within_its_lease() {
    use crate::helpers::{Forwarder, Served, SmtpSink, TempDir, TestDb};

    let db = TestDb::new(Backend::Postgres).await;
    let sink = SmtpSink::start();
    // Replica A reaches the relay through a forwarder that lets nothing
    // through: its send hangs.
    let relay = Forwarder::start(sink.addr).await;
    relay.freeze();
    let dir = TempDir::new();
    let envs = |smtp: String| {
        vec![
            ("LATCHKEY_DATABASE_URL", db.url.clone()),
            ("LATCHKEY_SMTP_URL", smtp),
            ("LATCHKEY_SMTP_TIMEOUT", "30s".to_owned()),
            ("LATCHKEY_OUTBOX_LEASE", "3s".to_owned()),
            ("LATCHKEY_OUTBOX_POLL_INTERVAL", "100ms".to_owned()),
            ("LATCHKEY_LOG", "info".to_owned()),
        ]
    };
    let (a_envs, b_envs) = (envs(format!("smtp://{}", relay.addr)), envs(sink.url()));
    let a_envs: Vec<(&str, &str)> = a_envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b_envs: Vec<(&str, &str)> = b_envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let key = crate::helpers::create_key_with(&dir.path, &a_envs).await;
    let a = Served::start(&dir.path, &a_envs).await;
    let http = reqwest::Client::new();
    let started = http
        .post(format!("http://{}/auth/start", a.http))
        .bearer_auth(&key)
        .json(&serde_json::json!({"email": "killed@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    // A has claimed it (and is stuck sending it)...
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let claimed = || async {
        sqlx::query_scalar::<_, i32>("SELECT attempts FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 1
    };
    assert!(eventually(Duration::from_secs(10), claimed).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...when it is killed.
    a.kill().await;
    let killed_at = tokio::time::Instant::now();
    let _b = Served::start(&dir.path, &b_envs).await;
    sink.wait_for_count("killed@example.com", 1).await;
    let after = killed_at.elapsed();
    assert!(
        after < Duration::from_secs(9),
        "sent {after:?} after the kill (lease 3 s)"
    );
    pool.close().await;
}

/// A relay outage is logged as two lines, when delivery starts failing and
/// when it works again, not one per attempt (the real binary, its JSON log).
#[tokio::test]
async fn a_relay_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    use crate::helpers::{Served, SmtpSink, TempDir, create_key};

    let dir = TempDir::new();
    let key = create_key(&dir.path).await;
    let relay = SmtpSink::reserve_addr(); // nothing listens there yet
    let url = format!("smtp://{relay}");
    let mut served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_SMTP_URL", url.as_str()),
            ("LATCHKEY_OUTBOX_RETRY_BASE", "50ms"),
            ("LATCHKEY_OUTBOX_RETRY_MAX", "100ms"),
            ("LATCHKEY_OUTBOX_POLL_INTERVAL", "50ms"),
            ("LATCHKEY_LOG", "info"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    for who in ["a", "b", "c"] {
        let started = http
            .post(format!("http://{}/auth/start", served.http))
            .bearer_auth(&key)
            .json(&serde_json::json!({"email": format!("{who}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 200);
    }
    // Attempts fail while the relay is down: every 50-100 ms at first,
    // then (the circuit breaker open) one probe after 1, 2, 4, 5… s.
    let db = format!(
        "sqlite://{}?mode=ro",
        dir.path.join("latchkey.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let attempts = || async {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(attempts), 0) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    assert!(eventually(Duration::from_secs(20), || async { attempts().await >= 6 }).await);
    let sink = SmtpSink::start_at(relay);
    for who in ["a", "b", "c"] {
        sink.wait_for(&format!("{who}@example.com")).await;
    }
    let sent = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    assert!(eventually(Duration::from_secs(10), || async { sent().await == 3 }).await);
    let failed = attempts().await - 3;
    pool.close().await;
    served.terminate().await;
    assert!(served.exited().await.success());

    let log = served.rest_of_log().await;
    let lines: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let said = |text: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["message"].as_str() == Some(text))
            .collect::<Vec<_>>()
    };
    let failing = said("email delivery is failing (logged once, until it works again)");
    assert_eq!(failing.len(), 1, "{log:#?}");
    assert_eq!(failing[0]["level"], "WARN");
    let back = said("email delivery works again");
    assert_eq!(back.len(), 1, "{log:#?}");
    assert_eq!(back[0]["fields"]["failures"].as_i64(), Some(failed));
    let warnings = lines.iter().filter(|l| l["level"] == "WARN").count();
    assert_eq!(
        warnings, 1,
        "{failed} failed attempts, one warning: {log:#?}"
    );
}

/// The bytes of an outbox claim's reply row that hold an email's kind and
/// then its recipient (PostgreSQL sends each column as its length, four
/// bytes big-endian, then its value).
fn claim_reply_bytes(kind: &str, recipient: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for column in [kind, recipient] {
        bytes.extend(u32::try_from(column.len()).unwrap().to_be_bytes());
        bytes.extend(column.as_bytes());
    }
    bytes
}

/// One of a replica's database connections goes silent in the middle of
/// claiming an email (the claim reached PostgreSQL, which locked the row;
/// its reply and everything after it are lost, and no close arrives either
/// way, as when a route or a conntrack entry is dropped). The email still
/// goes out, once, well within a lease, and the replica whose connection
/// froze goes on sending email by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_connection_frozen_mid_claim_holds_up_no_email() {
    use std::sync::Arc;

    use latchkey::{clock::Clock, config::Secret};

    use crate::helpers::{SmtpSink, TempDir, TestDb, Transport, start, test_settings};

    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let (forwarder, via_forwarder) = crate::server::forwarded(&db).await;
    let smtp = SmtpSink::start();
    let dir = Arc::new(TempDir::new());
    let mut settings = test_settings(&db, &dir.path, &smtp.url());
    settings.database_statement_timeout = Duration::from_secs(1);
    settings.database_idle_in_transaction_timeout = Duration::from_secs(2);
    let victim = "frozen@example.com";
    forwarder.freeze_when_server_sends(&claim_reply_bytes("sign_in", victim));
    let a = start(
        {
            let mut s = settings.clone();
            // In clear, so the forwarder can see the reply.
            s.database_url = Some(Secret::new(format!("{via_forwarder}?sslmode=disable")));
            s
        },
        db.clone(),
        smtp.clone(),
        dir.clone(),
        Clock::system(),
        Transport::Grpc,
    )
    .await;
    a.start_auth(victim).await.unwrap();
    forwarder.wait_frozen(Duration::from_secs(10)).await;
    let frozen_at = tokio::time::Instant::now();

    // Replica B reaches the database on a path of its own.
    let b = start(
        settings.clone(),
        db.clone(),
        smtp.clone(),
        dir.clone(),
        a.clock.clone(),
        Transport::Grpc,
    )
    .await;
    smtp.wait_for(victim).await;
    let late = frozen_at.elapsed();
    assert!(
        late < Duration::from_secs(10),
        "sent {late:?} after the freeze"
    );
    assert!(
        sent_within(&b, 1, Duration::from_secs(10)).await,
        "never recorded as sent"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails_to(victim).len(), 1, "one copy");

    // With B gone, A sends the next email itself.
    b.begin_shutdown();
    let mut b = b;
    b.stopped().await.unwrap();
    a.start_auth("after@example.com").await.unwrap();
    smtp.wait_for("after@example.com").await;
}
