use std::time::Duration;

use crate::both_backends;
use crate::helpers::{Backend, SmtpSink, spawn_app, spawn_app_with, spawn_replica};

both_backends!(email_accepted_while_smtp_is_down_is_delivered_once_it_is_back);

async fn email_accepted_while_smtp_is_down_is_delivered_once_it_is_back(backend: Backend) {
    let down = SmtpSink::reserve_addr();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(latchkey::config::Secret::new(format!("smtp://{down}")));
    })
    .await;

    // StartAuth succeeds while nothing listens on the SMTP port.
    let started = app.start_auth("offline@example.com").await.unwrap();
    let other = app.start_auth("offline2@example.com").await.unwrap();

    // The worker has tried and failed at least once; the mail waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let failed = app.outbox_errors().await;
        if failed.len() == 2 {
            assert!(failed.iter().all(|e| !e.is_empty()));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.store.outbox_counts().await.unwrap().queued, 2);

    // SMTP comes back: both messages arrive, each exactly once, and the codes work.
    let smtp = SmtpSink::start_at(down);
    let mail = smtp.wait_for("offline@example.com").await;
    smtp.wait_for("offline2@example.com").await;
    app.verify(&started.session_id, &mail.code()).await.unwrap();
    let _ = other;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 2, "no duplicates");
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.queued, counts.sent, counts.dead), (0, 2, 0));
}

#[tokio::test]
async fn without_smtp_the_dev_mailbox_keeps_each_email_as_an_eml_file() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.smtp_url = None).await;
    let started = app.start_auth("dev@example.com").await.unwrap();

    let mailbox = app.mailbox_dir();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found = std::fs::read_dir(&mailbox).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(path) = found {
            break path;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no .eml in {}",
            mailbox.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(file.extension().unwrap(), "eml");
    let eml = std::fs::read_to_string(&file).unwrap();
    let subject = eml.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    let code = subject["Subject: ".len()..]
        .split_whitespace()
        .next()
        .unwrap();
    assert!(eml.contains("To: dev@example.com"));
    app.verify(&started.session_id, code).await.unwrap();
}

both_backends!(a_permanent_refusal_kills_only_that_message_and_requeue_sends_it);

/// The mail server refuses one recipient for good (550): that message goes
/// dead with the error, the others are delivered, and once the address is
/// fixed `latchkey outbox requeue` sends it.
async fn a_permanent_refusal_kills_only_that_message_and_requeue_sends_it(backend: Backend) {
    let app = spawn_app(backend).await;
    app.smtp.reject("bounce@example.com");
    app.start_auth("bounce@example.com").await.unwrap();
    app.start_auth("fine@example.com").await.unwrap();
    app.smtp.wait_for("fine@example.com").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.store.outbox_counts().await.unwrap().dead < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never marked dead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = app.store.outbox_list("dead", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].recipient, "bounce@example.com");
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("550"),
        "{:?}",
        dead[0].last_error
    );
    assert_eq!(dead[0].attempts, 1, "a permanent refusal is not retried");

    let listing = crate::helpers::cli(&app, &["outbox", "list", "--state", "dead"]).await;
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("b***@example.com") && !listing.contains("bounce@"),
        "{listing}"
    );

    app.smtp.accept("bounce@example.com");
    let out = crate::helpers::cli(&app, &["outbox", "requeue", &dead[0].id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = app.smtp.wait_for("bounce@example.com").await;
    assert_eq!(mail.code().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_three_hundred_messages_and_send_each_once() {
    let app = spawn_app(Backend::Postgres).await;
    let b = spawn_replica(&app, |_| {}).await;
    let c = spawn_replica(&app, |_| {}).await;
    // Queue from all three (each wakes its own worker; NOTIFY wakes the others).
    let mut calls = Vec::new();
    for i in 0..300 {
        let api = [&app.api, &b.api, &c.api][i % 3].clone();
        calls.push(tokio::spawn(async move {
            api.start_auth(latchkey::proto::StartAuthRequest {
                email: format!("bulk{i}@example.com"),
                ..Default::default()
            })
            .await
            .unwrap()
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.smtp.mails().len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 300 delivered",
            app.smtp.mails().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_outbox_drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut recipients: Vec<String> = app.smtp.mails().into_iter().flat_map(|m| m.to).collect();
    recipients.sort();
    let total = recipients.len();
    recipients.dedup();
    assert_eq!((total, recipients.len()), (300, 300), "each exactly once");
    let counts = app.store.outbox_counts().await.unwrap();
    assert_eq!((counts.queued, counts.sent, counts.dead), (0, 300, 0));
}

#[tokio::test]
async fn another_replicas_enqueue_wakes_the_worker_without_waiting_for_a_poll() {
    use latchkey::{
        auth::payload::{self, SignInPayload},
        store::MailKind,
    };
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.outbox_poll_interval = Duration::from_secs(600);
    })
    .await;
    // Queue a message as another process would: straight into the table,
    // in a transaction that notifies.
    let kek = latchkey::server::load_kek(&app.settings).unwrap();
    let now = app.clock.now_ms();
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = payload::seal(
        &kek,
        &id,
        &SignInPayload {
            code: Some("424242".into()),
            link: None,
            expires_at: now + 600_000,
            extend_until: now + 1_800_000,
            locale: "en".into(),
            new_email: None,
        },
    );
    let mut tx = app.store.begin().await.unwrap();
    tx.enqueue_mail(&latchkey::store::NewMail {
        id: &id,
        tenant_id: "default",
        session_id: None,
        kind: MailKind::SignIn,
        recipient: "woken@example.com",
        payload_sealed: Some(&sealed),
        created_at: now,
        deliver: true,
        notify: true,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // With a 10-minute poll, only the notification can deliver it this soon.
    let mail = app.smtp.wait_for("woken@example.com").await;
    assert_eq!(mail.code(), "424242");
}

both_backends!(
    a_slow_delivery_does_not_eat_the_codes_minutes,
    a_message_is_given_up_after_its_attempts_and_when_its_code_can_no_longer_work,
);

/// Validity counts from when the mail server accepted the email.
async fn a_slow_delivery_does_not_eat_the_codes_minutes(backend: Backend) {
    let down = SmtpSink::reserve_addr();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(latchkey::config::Secret::new(format!("smtp://{down}")));
    })
    .await;
    let started = app.start_auth("late@example.com").await.unwrap();
    // The relay is down for 9 of the code's 10 minutes.
    app.clock.advance(Duration::from_secs(9 * 60));
    let smtp = SmtpSink::start_at(down);
    let mail = smtp.wait_for("late@example.com").await;
    app.wait_outbox_drained().await;
    // 14 minutes after StartAuth, 5 after delivery: still good.
    app.clock.advance(Duration::from_secs(5 * 60));
    app.verify(&started.session_id, &mail.code())
        .await
        .expect("the code's 10 minutes started at delivery");
}

async fn a_message_is_given_up_after_its_attempts_and_when_its_code_can_no_longer_work(
    backend: Backend,
) {
    let down = SmtpSink::reserve_addr();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(latchkey::config::Secret::new(format!("smtp://{down}")));
        s.outbox_max_attempts = 2;
    })
    .await;
    app.start_auth("unlucky@example.com").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.store.outbox_counts().await.unwrap().dead < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never given up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = &app.store.outbox_list("dead", 10).await.unwrap()[0];
    assert_eq!(dead.attempts, 2);
    assert!(
        dead.last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 2 attempts")
    );

    // Requeued after the code's absolute limit (30 min): not sent, dead again.
    let _smtp = SmtpSink::start_at(down);
    app.clock.advance(Duration::from_secs(31 * 60));
    app.store
        .requeue_dead(None, app.clock.now_ms())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dead = app.store.outbox_list("dead", 10).await.unwrap();
        if dead.len() == 1 && dead[0].last_error.as_deref().unwrap().contains("expired") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not given up as expired: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(_smtp.mails().is_empty(), "an expired code is never sent");
}
