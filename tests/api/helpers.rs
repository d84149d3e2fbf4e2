//! The test harness: a real latchkey server on port 0, over a fresh SQLite
//! file or a fresh PostgreSQL database, sending mail to a real SMTP server
//! (mailin-embedded) over TCP on 127.0.0.1.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use latchkey::{
    clock::Clock,
    config::{Secret, Settings},
    proto::{self, auth_service_client::AuthServiceClient},
    server::Server,
    store::Store,
};

pub use crate::client::{ApiClient, ApiError, Transport};
use mailin_embedded::{Handler, Response, response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use latchkey::store::Backend;

/// PostgreSQL used by the tests; `DATABASE_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// What a test runs against.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub backend: Backend,
    pub transport: Transport,
}

impl From<Backend> for Case {
    fn from(backend: Backend) -> Self {
        Self {
            backend,
            transport: Transport::Grpc,
        }
    }
}

/// Runs one behaviour on both backends and both transports:
/// `matrix!(name);` expects an `async fn name(case: Case)` and makes
/// `name::{sqlite_grpc, sqlite_http, postgres_grpc, postgres_http}`.
#[macro_export]
macro_rules! matrix {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::helpers::{Backend, Case, Transport};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_grpc() {
                super::$name(Case { backend: Backend::Sqlite, transport: Transport::Grpc }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_http() {
                super::$name(Case { backend: Backend::Sqlite, transport: Transport::Http }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_grpc() {
                super::$name(Case { backend: Backend::Postgres, transport: Transport::Grpc }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_http() {
                super::$name(Case { backend: Backend::Postgres, transport: Transport::Http }).await
            }
        }
    )+};
}

/// Runs one behaviour on both backends: `both_backends!(name);` expects an
/// `async fn name(backend: Backend)` and makes `name::sqlite` and
/// `name::postgres` tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )+};
}

/// A fresh, empty database for one test, dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = TempDir::new();
        match backend {
            Backend::Sqlite => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path.join("latchkey.db").display()
                ),
                backend,
                _dir: dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("latchkey_test_{}", uuid::Uuid::now_v7().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin} ({e}). Start it with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                         or point DATABASE_URL at one."
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("DATABASE_URL must name a database"),
                };
                Self {
                    url,
                    backend,
                    _dir: dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("latchkey-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A message the SMTP server accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(self.data.as_bytes()).expect("a MIME message")
    }

    /// The sign-in code, read from the subject line.
    pub fn code(&self) -> String {
        let subject = self
            .header("Subject")
            .unwrap_or_else(|| panic!("no Subject in {}", self.data));
        subject
            .split_whitespace()
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in subject {subject:?}"))
            .to_owned()
    }

    /// A header, decoded (RFC 2047).
    pub fn header(&self, name: &str) -> Option<String> {
        use mailparse::MailHeaderMap;
        self.parsed().headers.get_first_value(name)
    }

    /// The decoded body of the part with this MIME type.
    pub fn part(&self, mime: &str) -> String {
        fn find(m: &mailparse::ParsedMail<'_>, mime: &str) -> Option<String> {
            if m.ctype.mimetype == mime {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(|p| find(p, mime))
        }
        find(&self.parsed(), mime).unwrap_or_else(|| panic!("no {mime} part in {}", self.data))
    }

    /// The magic link in the text part.
    pub fn link(&self) -> String {
        let text = self.part("text/plain");
        text.split_whitespace()
            .find(|w| w.contains("token=lkl_"))
            .unwrap_or_else(|| panic!("no magic link in {text}"))
            .to_owned()
    }

    /// The link token of the magic link.
    pub fn link_token(&self) -> String {
        let link = self.link();
        link.rsplit("token=").next().unwrap().to_owned()
    }
}

#[derive(Default)]
struct Inbox {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    /// Recipients refused with a permanent 550.
    rejected: Mutex<Vec<String>>,
    /// How long the server takes to accept a message (a slow relay).
    delay: Mutex<Duration>,
    /// The same for messages to one recipient (overrides `delay`).
    delay_for: Mutex<Vec<(String, Duration)>>,
    /// Messages being accepted right now, and the most there ever were.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

/// A real SMTP server (mailin-embedded) on 127.0.0.1, collecting messages.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
}

#[derive(Clone)]
struct SinkHandler {
    inbox: Arc<Inbox>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for SinkHandler {
    fn rcpt(&mut self, to: &str) -> Response {
        let to = to.trim_matches(['<', '>']);
        if self.inbox.rejected.lock().unwrap().iter().any(|r| r == to) {
            response::NO_MAILBOX
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // A thread per connection: only this message waits.
        let own = self
            .inbox
            .delay_for
            .lock()
            .unwrap()
            .iter()
            .find_map(|(to, d)| {
                self.to
                    .iter()
                    .any(|t| t.trim_matches(['<', '>']) == to)
                    .then_some(*d)
            });
        let delay = own.unwrap_or(*self.inbox.delay.lock().unwrap());
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inbox.in_flight.fetch_add(1, SeqCst) + 1;
        self.inbox.most_in_flight.fetch_max(now, SeqCst);
        std::thread::sleep(delay);
        self.inbox.in_flight.fetch_sub(1, SeqCst);
        let mail = ReceivedMail {
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
        };
        self.inbox.mails.lock().unwrap().push(mail);
        self.inbox.arrived.notify_waiters();
        response::OK
    }
}

impl SmtpSink {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// An address with nothing listening yet (for "SMTP is down"), and
    /// later [`SmtpSink::start_at`] on it.
    pub fn reserve_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    pub fn start_at(addr: SocketAddr) -> Self {
        Self::start_on(TcpListener::bind(addr).expect("bind the reserved SMTP port"))
    }

    fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Inbox::default());
        let handler = SinkHandler {
            inbox: inbox.clone(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = mailin_embedded::Server::new(handler);
        // Thread per connection: more threads than the service pools connections.
        server
            .with_name("sink.test")
            .with_tcp_listener(listener)
            .with_num_threads(32);
        // mailin has no shutdown: the thread ends with the test process.
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { addr, inbox }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Refuse mail to `to` permanently (550) until [`SmtpSink::accept`].
    pub fn reject(&self, to: &str) {
        self.inbox.rejected.lock().unwrap().push(to.to_owned());
    }

    /// Answer each message's end of data only after `delay` (a slow relay).
    pub fn set_delay(&self, delay: Duration) {
        *self.inbox.delay.lock().unwrap() = delay;
    }

    /// The most messages this server was ever accepting at once.
    pub fn most_in_flight(&self) -> usize {
        self.inbox
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answer the end of data of messages to `to` only after `delay`.
    pub fn set_delay_for(&self, to: &str, delay: Duration) {
        self.inbox
            .delay_for
            .lock()
            .unwrap()
            .push((to.to_owned(), delay));
    }

    pub fn accept(&self, to: &str) {
        self.inbox.rejected.lock().unwrap().retain(|r| r != to);
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.inbox.mails.lock().unwrap().clone()
    }

    /// The messages to one address so far, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<ReceivedMail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .collect()
    }

    /// Waits (up to 10 s) until a message to `to` has arrived and returns the
    /// newest such message.
    pub async fn wait_for(&self, to: &str) -> ReceivedMail {
        self.wait_for_count(to, 1).await.pop().unwrap()
    }

    /// Waits (up to 10 s) until `n` messages to `to` have arrived.
    pub async fn wait_for_count(&self, to: &str, n: usize) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.inbox.arrived.notified();
            let mails = self.mails_to(to);
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{n} mail(s) to {to} did not arrive within 10 s; got {}",
                    mails.len()
                );
            }
        }
    }
}

/// Settings for a test server: port 0, fast retries and polling.
pub fn test_settings(db: &TestDb, data_dir: &std::path::Path, smtp_url: &str) -> Settings {
    let mut s = Settings::defaults();
    s.data_dir = data_dir.to_path_buf();
    s.database_url = Some(Secret::new(db.url.clone()));
    s.database_max_connections = 8;
    s.grpc_addr = "127.0.0.1:0".parse().unwrap();
    s.http_addr = "127.0.0.1:0".parse().unwrap();
    s.metrics_addr = "127.0.0.1:0".parse().unwrap();
    s.smtp_url = Some(Secret::new(smtp_url));
    s.smtp_timeout = Duration::from_secs(2);
    s.mail_from = "Test App <login@app.test>".to_owned();
    s.app_name = "Test App".to_owned();
    s.outbox_poll_interval = Duration::from_millis(100);
    s.outbox_retry_base = Duration::from_millis(100);
    s.outbox_retry_max = Duration::from_millis(300);
    s.key_reload_interval = Duration::from_millis(200);
    s.shutdown_grace = Duration::from_secs(5);
    s.issuer = "https://auth.app.test".to_owned();
    s.audience = "app.test".to_owned();
    // Abuse limits out of the way; tests/api/abuse.rs sets its own.
    s.rate_limit_email = 10_000;
    s.rate_limit_ip = 10_000;
    s.rate_limit_tenant = 0;
    s.verify_failure_budget = 10_000;
    s
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// The client of the transport this test runs on (with `key`).
    pub api: ApiClient,
    /// An app key of the default tenant.
    pub key: String,
    /// The server's admin operations, in-process.
    pub admin: latchkey::auth::admin::Admin,
    pub grpc: AuthServiceClient<Channel>,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>` of the JSON gateway.
    pub http_base: String,
    pub http: reqwest::Client,
    pub clock: Clock,
    pub smtp: SmtpSink,
    pub store: Store,
    pub settings: Settings,
    pub db: Arc<TestDb>,
    pub shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub data_dir: Arc<TempDir>,
}

/// Starts a server on a fresh database with a working SMTP server.
pub async fn spawn_app(case: impl Into<Case>) -> TestApp {
    spawn_app_with(case, |_| {}).await
}

/// Like [`spawn_app`], adjusting the settings first.
pub async fn spawn_app_with(case: impl Into<Case>, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let case = case.into();
    let db = Arc::new(TestDb::new(case.backend).await);
    let smtp = SmtpSink::start();
    let data_dir = Arc::new(TempDir::new());
    let mut settings = test_settings(&db, &data_dir.path, &smtp.url());
    adjust(&mut settings);
    start(
        settings,
        db,
        smtp,
        data_dir,
        Clock::system(),
        case.transport,
    )
    .await
}

/// Starts another server process-equivalent on the same database, KEK and
/// SMTP server (a second replica), its clock in step with the first's (as
/// NTP keeps real replicas).
pub async fn spawn_replica(of: &TestApp, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = of.settings.clone();
    adjust(&mut settings);
    start(
        settings,
        of.db.clone(),
        of.smtp.clone(),
        of.data_dir.clone(),
        of.clock.clone(),
        of.api.transport(),
    )
    .await
}

pub async fn start(
    settings: Settings,
    db: Arc<TestDb>,
    smtp: SmtpSink,
    data_dir: Arc<TempDir>,
    clock: Clock,
    transport: Transport,
) -> TestApp {
    // Quiet by default; LATCHKEY_TEST_LOG=info (say) shows the servers' logs.
    let filter = std::env::var("LATCHKEY_TEST_LOG").unwrap_or_else(|_| "error".to_owned());
    latchkey::telemetry::init(&filter, latchkey::config::LogFormat::Text);
    let server = Server::build(settings.clone(), clock.clone())
        .await
        .expect("server builds");
    // Every test calls as an app of the default tenant unless it says otherwise.
    let key = server
        .admin()
        .create_api_key(
            "default",
            "tests",
            latchkey::auth::apikeys::Scope::App,
            None,
        )
        .await
        .expect("an API key")
        .key;
    let addr = server.grpc_addr();
    let server_admin = server.admin().clone();
    let http_base = format!("http://{}", server.http_addr());
    let store = server.store().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    let grpc = AuthServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the server");
    let http = reqwest::Client::new();
    let api = match transport {
        Transport::Grpc => ApiClient::Grpc {
            client: grpc.clone(),
            key: Some(key.clone()),
        },
        Transport::Http => ApiClient::Http {
            client: http.clone(),
            base: http_base.clone(),
            key: Some(key.clone()),
        },
    };
    TestApp {
        api,
        key,
        admin: server_admin,
        grpc,
        addr,
        http_base,
        http,
        clock,
        smtp,
        store,
        settings,
        db,
        shutdown,
        server: Some(handle),
        data_dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the server's background work before the database goes away.
        self.shutdown.cancel();
    }
}

/// What a completed login returned.
pub struct LoggedIn {
    pub session_id: String,
    pub verify: proto::VerifyResponse,
}

impl TestApp {
    /// StartAuth with just an email (METHOD_CODE).
    pub async fn start_auth(&self, email: &str) -> Result<proto::StartAuthResponse, ApiError> {
        self.api
            .start_auth(proto::StartAuthRequest {
                email: email.to_owned(),
                method: proto::Method::Code as i32,
                ..Default::default()
            })
            .await
    }

    /// StartAuth with just an email, letting the server choose the method.
    pub async fn start_auth_plain(&self, email: &str) -> proto::StartAuthResponse {
        self.api
            .start_auth(proto::StartAuthRequest {
                email: email.to_owned(),
                ..Default::default()
            })
            .await
            .expect("StartAuth")
    }

    pub async fn verify(
        &self,
        session_id: &str,
        code: &str,
    ) -> Result<proto::VerifyResponse, ApiError> {
        self.api
            .verify(proto::VerifyRequest {
                session_id: session_id.to_owned(),
                code: code.to_owned(),
                ..Default::default()
            })
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<proto::RefreshResponse, ApiError> {
        self.api
            .refresh(proto::RefreshRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await
    }

    pub async fn revoke(&self, refresh_token: &str, session_id: &str) -> Result<(), ApiError> {
        self.api
            .revoke(proto::RevokeRequest {
                refresh_token: refresh_token.to_owned(),
                session_id: session_id.to_owned(),
            })
            .await
            .map(|_| ())
    }

    pub async fn jwks(&self) -> proto::GetJwksResponse {
        self.api.jwks().await
    }

    /// Starts a login and returns the session id and the emailed code.
    pub async fn start_and_read_code(&self, email: &str) -> (String, String) {
        let before = self.smtp.mails_to(email).len();
        let started = self.start_auth(email).await.expect("StartAuth");
        let mails = self.smtp.wait_for_count(email, before + 1).await;
        // The SMTP server has the mail; wait until the worker has recorded
        // it too, so later database snapshots are stable.
        self.wait_outbox_drained().await;
        (started.session_id, mails[before].code())
    }

    /// Waits (up to 10 s) until no outbox message is queued.
    pub async fn wait_outbox_drained(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.store.outbox_counts().await.unwrap().queued > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox never drained"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates a tenant and an app key of it; returns the key and a client
    /// of this test's transport that sends it.
    pub async fn tenant(
        &self,
        id: &str,
        settings: latchkey::auth::tenants::TenantSettings,
    ) -> (String, ApiClient) {
        self.admin.create_tenant(id, id, settings).await.unwrap();
        let key = self
            .admin
            .create_api_key(id, "tests", latchkey::auth::apikeys::Scope::App, None)
            .await
            .unwrap()
            .key;
        let client = self.api.with_key(Some(&key));
        (key, client)
    }

    /// A complete code login.
    pub async fn login(&self, email: &str) -> LoggedIn {
        let (session_id, code) = self.start_and_read_code(email).await;
        let verify = self.verify(&session_id, &code).await.expect("Verify");
        LoggedIn { session_id, verify }
    }

    /// Waits for the server task to end (after `shutdown` fired).
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        self.server
            .take()
            .expect("not awaited yet")
            .await
            .expect("server task")
    }

    /// A connection pool of the test's own to the server's database.
    pub async fn db_pool(&self) -> TestPool {
        match self.db.backend {
            Backend::Sqlite => {
                TestPool::Sqlite(sqlx::SqlitePool::connect(&self.db.url).await.unwrap())
            }
            Backend::Postgres => {
                TestPool::Postgres(sqlx::PgPool::connect(&self.db.url).await.unwrap())
            }
        }
    }

    /// A snapshot of every table's rows that an API call could change, to
    /// prove a refused call changed nothing.
    pub async fn snapshot(&self) -> Vec<String> {
        let pool = self.db_pool().await;
        let mut rows = Vec::new();
        for q in [
            "SELECT 'user ' || id || ' ' || email FROM users ORDER BY id",
            "SELECT 'session ' || id || ' ' || state || ' ' || attempts || ' ' || COALESCE(end_reason, '-') FROM auth_sessions ORDER BY id",
            "SELECT 'refresh ' || session_id || ' ' || COALESCE(CAST(rotated_at AS TEXT), '-') FROM refresh_tokens ORDER BY session_id, created_at",
            // Delivery moves a message on by itself (queued, sent) at any
            // moment; only its existence and a dead end count as changes.
            "SELECT 'outbox ' || id || ' ' || CASE WHEN state = 'dead' THEN 'dead' ELSE 'live' END FROM outbox ORDER BY id",
            "SELECT 'key ' || kid FROM signing_keys ORDER BY kid",
        ] {
            rows.extend(pool.strings(q).await);
        }
        pool.close().await;
        rows
    }

    /// Every stored secret-bearing value (hashes and sealed blobs) as raw
    /// bytes, plus on SQLite the database files themselves, to prove a
    /// plaintext secret is not stored.
    pub async fn raw_dump(&self) -> Vec<u8> {
        let pool = self.db_pool().await;
        let mut out = Vec::new();
        for q in [
            "SELECT code_hash FROM auth_sessions",
            "SELECT link_hash FROM auth_sessions",
            "SELECT payload_sealed FROM outbox",
            "SELECT token_hash FROM refresh_tokens",
            "SELECT successor_sealed FROM refresh_tokens",
        ] {
            out.extend(pool.blobs(q).await.into_iter().flatten().flatten());
        }
        pool.close().await;
        if self.db.backend == Backend::Sqlite {
            let file = self
                .db
                .url
                .trim_start_matches("sqlite://")
                .trim_end_matches("?mode=rwc");
            for suffix in ["", "-wal"] {
                if let Ok(bytes) = std::fs::read(format!("{file}{suffix}")) {
                    out.extend(bytes);
                }
            }
        }
        out
    }

    /// `last_error` of every queued outbox message that has failed at least once.
    pub async fn outbox_errors(&self) -> Vec<String> {
        let pool = self.db_pool().await;
        let rows = pool
            .strings(
                "SELECT last_error FROM outbox WHERE state = 'queued' AND last_error IS NOT NULL",
            )
            .await;
        pool.close().await;
        rows
    }

    /// Takes the database's write lock from outside the server, so the
    /// server's next write waits until [`WriteLock::release`].
    pub async fn hold_write_lock(&self) -> WriteLock {
        match self.db_pool().await {
            TestPool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query("UPDATE tenants SET name = name")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                WriteLock::Sqlite(tx)
            }
            TestPool::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("LOCK TABLE auth_sessions IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                WriteLock::Postgres(tx)
            }
        }
    }
}

/// The test's own pool to a test database.
pub enum TestPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestPool {
    pub async fn connect(db: &TestDb) -> Self {
        match db.backend {
            Backend::Sqlite => Self::Sqlite(sqlx::SqlitePool::connect(&db.url).await.unwrap()),
            Backend::Postgres => Self::Postgres(sqlx::PgPool::connect(&db.url).await.unwrap()),
        }
    }

    pub async fn strings(&self, sql: &'static str) -> Vec<String> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
            Self::Postgres(p) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
        }
    }

    pub async fn blobs(&self, sql: &'static str) -> Vec<Option<Vec<u8>>> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar::<_, Option<Vec<u8>>>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
            Self::Postgres(p) => sqlx::query_scalar::<_, Option<Vec<u8>>>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
        }
    }

    pub async fn exec(&self, sql: &'static str) {
        match self {
            Self::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
            Self::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
        }
    }

    pub async fn close(self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// A write lock held from outside the server.
pub enum WriteLock {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            Self::Sqlite(tx) => tx.rollback().await.unwrap(),
            Self::Postgres(tx) => tx.rollback().await.unwrap(),
        }
    }
}

/// A field as the transport names it: the proto name over gRPC, the JSON
/// name over HTTP (`client.user_agent` -> `client.userAgent`).
pub fn field_name(transport: Transport, proto: &str) -> String {
    if transport == Transport::Grpc {
        return proto.to_owned();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in proto.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A TCP forwarder (to PostgreSQL or an SMTP server) that a test controls:
/// cut (connections dropped, new ones refused), frozen (connections kept
/// open but nothing forwarded: a blackhole), or one connection frozen once
/// the server sends given bytes; and restored.
#[derive(Clone)]
pub struct Forwarder {
    pub addr: SocketAddr,
    ctl: Arc<ForwarderCtl>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Default)]
struct ForwarderCtl {
    up: std::sync::atomic::AtomicBool,
    /// Every connection forwards nothing (until restored).
    frozen: std::sync::atomic::AtomicBool,
    /// Freeze the first connection on which the server sends these bytes.
    freeze_on: Mutex<Option<Vec<u8>>>,
    /// Connections frozen that way so far.
    frozen_connections: std::sync::atomic::AtomicUsize,
    froze: Notify,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(ForwarderCtl::default());
        ctl.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (ctl2, gen2) = (ctl.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !ctl2.up.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // refused while cut
                    continue;
                }
                let mut cut = gen2.subscribe();
                let ctl = ctl2.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let this = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let (client_read, client_write) = inbound.into_split();
                    let (server_read, server_write) = outbound.into_split();
                    let up = pump(client_read, server_write, false, &ctl, &this);
                    let down = pump(server_read, client_write, true, &ctl, &this);
                    tokio::select! {
                        _ = futures_util::future::join(up, down) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            ctl,
            generation,
        }
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.ctl
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// A blackhole: every connection, open or new, stays open but nothing
    /// goes through (a dropped route or conntrack entry).
    #[allow(dead_code)] // the fault suite uses it
    pub fn freeze(&self) {
        self.ctl
            .frozen
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first connection on which the server sends `bytes` forwards
    /// nothing more, that reply included, either way; the others carry on.
    pub fn freeze_when_server_sends(&self, bytes: &[u8]) {
        *self.ctl.freeze_on.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Waits (up to `within`) until a connection was frozen by
    /// [`Forwarder::freeze_when_server_sends`].
    pub async fn wait_frozen(&self, within: Duration) {
        tokio::time::timeout(within, async {
            loop {
                let froze = self.ctl.froze.notified();
                if self
                    .ctl
                    .frozen_connections
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
                {
                    return;
                }
                froze.await;
            }
        })
        .await
        .expect("a connection froze in time");
    }

    /// Works again: frozen connections are dropped (as a reset would),
    /// new ones go through.
    pub fn restore(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.ctl.frozen.swap(false, SeqCst) || self.ctl.frozen_connections.load(SeqCst) > 0 {
            self.generation.send_modify(|g| *g += 1);
        }
        self.ctl.up.store(true, SeqCst);
    }
}

/// Copies one direction of a forwarded connection until either side closes,
/// or stops forwarding for good once the connection is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    from_server: bool,
    ctl: &ForwarderCtl,
    this_frozen: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if from_server && n > 0 {
            let mut freeze_on = ctl.freeze_on.lock().unwrap();
            let hit = freeze_on
                .as_deref()
                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p));
            if hit {
                *freeze_on = None;
                this_frozen.store(true, SeqCst);
                ctl.frozen_connections.fetch_add(1, SeqCst);
                ctl.froze.notify_waiters();
            }
        }
        if this_frozen.load(SeqCst) || ctl.frozen.load(SeqCst) {
            // Nothing more either way, not even a close: both ends keep
            // waiting (until the test cuts or restores).
            this_frozen.store(true, SeqCst);
            let _keep = (from, to);
            return std::future::pending().await;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Runs the `latchkey` binary against the app's database and data dir.
/// (Async: a blocking wait would stall the in-process server mid-transaction.)
pub async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    cli_with_env(app, &[], args).await
}

/// [`cli`] with more `LATCHKEY_*` settings in the command's environment.
pub async fn cli_with_env(
    app: &TestApp,
    envs: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .envs(envs.iter().copied())
        .env("LATCHKEY_DATA_DIR", &app.data_dir.path)
        .env("LATCHKEY_DATABASE_URL", &app.db.url)
        .env("LATCHKEY_LOG", "error")
        .output()
        .await
        .unwrap()
}

/// The `latchkey` binary serving on port 0 in a process of its own, with
/// JSON logs (for what only a whole process shows: metrics, exported
/// traces, signals, exit codes).
pub struct Served {
    pub child: tokio::process::Child,
    pub grpc: String,
    pub http: String,
    pub metrics: String,
    /// The log lines before "latchkey is serving".
    pub early_log: Vec<String>,
    /// The log lines after it, as they come (read by a task, so the process
    /// never blocks on a full pipe).
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Served {
    /// Starts `latchkey serve` with `dir` as its data directory and `envs`.
    pub async fn start(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["serve"])
            .env("LATCHKEY_GRPC_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_HTTP_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_DATA_DIR", dir)
            .env("LATCHKEY_LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut early_log = Vec::new();
        let serving = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().unwrap_or_else(|| {
                    panic!("the log ended before serving:\n{}", early_log.join("\n"))
                });
                if line.contains("latchkey is serving") {
                    break serde_json::from_str::<serde_json::Value>(&line).unwrap();
                }
                early_log.push(line);
            }
        })
        .await
        .expect("serving within 30 s");
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let addr = |name: &str| serving["fields"][name].as_str().unwrap().to_owned();
        Self {
            child,
            grpc: addr("grpc"),
            http: addr("http"),
            metrics: addr("metrics"),
            early_log,
            log,
        }
    }

    /// The next JSON log line for which `wanted` holds (waits up to 10 s).
    pub async fn log_line(
        &mut self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.log.recv().await.expect("the log ended");
                let value: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if wanted(&value) {
                    return value;
                }
            }
        })
        .await
        .expect("the log line within 10 s")
    }

    /// The rest of the log, once the process has exited.
    pub async fn rest_of_log(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(10), self.log.recv()).await
        {
            lines.push(line);
        }
        lines
    }

    /// Sends SIGTERM.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process and waits for it.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits (up to 30 s) for the process to exit.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exit within 30 s")
            .unwrap()
    }

    pub async fn grpc_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// Creates an app key of the default tenant with the CLI, on the SQLite
/// database in `dir`.
pub async fn create_key(dir: &std::path::Path) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["apikey", "create", "--name", "tests"])
        .env("LATCHKEY_DATA_DIR", dir)
        .env("LATCHKEY_LOG", "error")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("lk_app_"))
        .expect("a key in the output")
        .to_owned()
}
