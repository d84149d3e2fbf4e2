//! How latchkey talks to its mail relay: SMTP credentials never cross the
//! network without TLS unless the URL says so, and a deployment that is not
//! the zero-setup SQLite one never silently falls back to the dev mailbox.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use latchkey::config::Secret;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

use crate::helpers::{Backend, spawn_app_with};

/// A real SMTP server over TCP that offers AUTH PLAIN/LOGIN but no STARTTLS
/// (as a relay does when someone strips STARTTLS from its answer), accepts
/// everything and records every line it receives.
struct RecordingRelay {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    delivered: Arc<Notify>,
}

impl RecordingRelay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let delivered = Arc::new(Notify::new());
        let (seen, done) = (lines.clone(), delivered.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, done) = (seen.clone(), done.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let _ = write.write_all(b"220 relay.test ESMTP\r\n").await;
                    let mut in_data = false;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        seen.lock().unwrap().push(line.trim_end().to_owned());
                        if in_data {
                            if line == ".\r\n" {
                                in_data = false;
                                let _ = write.write_all(b"250 queued\r\n").await;
                                done.notify_waiters();
                            }
                            continue;
                        }
                        let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-relay.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                            "AUTH" => b"235 accepted\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            lines,
            delivered,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

const USER: &str = "relayuser";
const PASSWORD: &str = "s3cret-pw";

/// Every form in which AUTH PLAIN or LOGIN would carry the password.
fn leaked(lines: &[String]) -> bool {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let plain = b64(&format!("\0{USER}\0{PASSWORD}"));
    lines.iter().any(|l| {
        l.to_uppercase().starts_with("AUTH")
            || l.contains(PASSWORD)
            || l.contains(&plain)
            || l.contains(&b64(PASSWORD))
    })
}

/// `tls=opportunistic` with a relay that offers no STARTTLS: latchkey does
/// not authenticate (the mail waits, with the reason recorded), so the
/// relay never sees the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_never_sends_credentials_to_a_relay_without_starttls() {
    let relay = RecordingRelay::start().await;
    let url = format!("smtp://{USER}:{PASSWORD}@{}?tls=opportunistic", relay.addr);
    let app = spawn_app_with(Backend::Sqlite, |s| s.smtp_url = Some(Secret::new(url))).await;
    app.start_auth("victim@example.com").await.unwrap();

    // The worker tried, and recorded why it did not send.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let errors = loop {
        let errors = app.outbox_errors().await;
        if !errors.is_empty() {
            break errors;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded; the relay saw {:?}",
            relay.lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(errors[0].contains("STARTTLS"), "{errors:?}");
    assert!(!errors[0].contains(PASSWORD), "{errors:?}");
    let lines = relay.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("EHLO")),
        "the relay was reached: {lines:?}"
    );
    assert!(!leaked(&lines), "credentials sent in clear: {lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("MAIL FROM")),
        "{lines:?}"
    );
}

/// A plain `smtp://user:pass@…` URL is refused at start-up, naming the
/// setting and the way out, without repeating the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_on_a_plain_smtp_url_are_refused_at_start_up() {
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let dir = crate::helpers::TempDir::new();
    let relay = RecordingRelay::start().await;
    let url = format!("smtp://{USER}:{PASSWORD}@{}", relay.addr);
    let settings = crate::helpers::test_settings(&db, &dir.path, &url);
    let err = latchkey::server::Server::build(settings, latchkey::clock::Clock::system())
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("LATCHKEY_SMTP_URL"), "{err}");
    assert!(err.contains("auth_without_tls=true"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(relay.lines().is_empty());
}

/// With `auth_without_tls=true` the operator has said so: AUTH goes in
/// clear and the mail is delivered (this also shows the relay above does
/// record an AUTH when one is sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_tls_is_allowed_when_the_url_says_so() {
    let relay = RecordingRelay::start().await;
    let url = format!(
        "smtp://{USER}:{PASSWORD}@{}?auth_without_tls=true",
        relay.addr
    );
    let app = spawn_app_with(Backend::Sqlite, |s| s.smtp_url = Some(Secret::new(url))).await;
    let delivered = relay.delivered.notified();
    app.start_auth("trusted@example.com").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), delivered)
        .await
        .expect("delivered within 10 s");
    let lines = relay.lines();
    assert!(leaked(&lines), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("MAIL FROM")),
        "{lines:?}"
    );
}

/// PostgreSQL without LATCHKEY_SMTP_URL is not the zero-setup laptop case:
/// `Server::build` refuses it, saying what to set, unless the dev mailbox
/// is asked for by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_smtp_needs_the_dev_mailbox_flag_to_build() {
    let db = crate::helpers::TestDb::new(Backend::Postgres).await;
    let dir = crate::helpers::TempDir::new();
    let mut settings = crate::helpers::test_settings(&db, &dir.path, "smtp://127.0.0.1:25");
    settings.smtp_url = None;
    let err = latchkey::server::Server::build(settings.clone(), latchkey::clock::Clock::system())
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("LATCHKEY_SMTP_URL"), "{err}");
    assert!(err.contains("LATCHKEY_DEV_MAILBOX=true"), "{err}");
    // Refused before anything was written: no tables, no mailbox, no key.
    let pool = crate::helpers::TestPool::connect(&db).await;
    let tables = pool
        .strings(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .await;
    pool.close().await;
    assert!(tables.is_empty(), "{tables:?}");
    assert!(!dir.path.join("mailbox").exists());

    // Asked for by name, the dev mailbox works on PostgreSQL too.
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.smtp_url = None;
        s.dev_mailbox = true;
    })
    .await;
    app.start_auth("dev@example.com").await.unwrap();
    app.wait_outbox_drained().await;
    let files = std::fs::read_dir(app.mailbox_dir()).unwrap().count();
    assert_eq!(files, 1);
}

/// The same through the real binary: `latchkey serve` on PostgreSQL with no
/// SMTP exits with the error; with `LATCHKEY_DEV_MAILBOX=true` it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_postgres_without_smtp_unless_told() {
    let db = crate::helpers::TestDb::new(Backend::Postgres).await;
    let dir = crate::helpers::TempDir::new();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["serve"])
        .env_remove("LATCHKEY_SMTP_URL")
        .env_remove("LATCHKEY_DEV_MAILBOX")
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_DATA_DIR", &dir.path)
        .env("LATCHKEY_GRPC_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_HTTP_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits instead of serving")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("LATCHKEY_SMTP_URL"), "{stderr}");
    assert!(stderr.contains("LATCHKEY_DEV_MAILBOX=true"), "{stderr}");

    let served = crate::helpers::Served::start(
        &dir.path,
        &[
            ("LATCHKEY_DATABASE_URL", db.url.as_str()),
            ("LATCHKEY_DEV_MAILBOX", "true"),
        ],
    )
    .await;
    assert!(
        served.early_log.iter().any(|l| l.contains("DEV MAILBOX")),
        "{:?}",
        served.early_log
    );
    served.kill().await;
}
