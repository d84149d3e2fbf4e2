//! A latchkey server in the test process, and the calls tests make on it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use latchkey::{
    clock::Clock,
    config::{Secret, Settings},
    proto::{self, auth_service_client::AuthServiceClient},
    server::Server,
    store::Store,
};

use crate::client::{ApiClient, ApiError, Transport};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::*;

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
    /// The gRPC listener's address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>` of the JSON gateway.
    pub http_base: String,
    /// A plain HTTP client, for gateway calls outside [`ApiClient`].
    pub http: reqwest::Client,
    /// The service's clock: `advance` it instead of waiting.
    pub clock: Clock,
    /// The SMTP server the outbox delivers to.
    pub smtp: SmtpSink,
    /// The server's store, for assertions on stored state.
    pub store: Store,
    /// The settings the server runs with.
    pub settings: Settings,
    grpc: AuthServiceClient<Channel>,
    pub(super) db: Arc<TestDb>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub(super) data_dir: Arc<TempDir>,
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
    /// A gRPC AuthService client without an API key (add one per request).
    pub fn grpc_client(&self) -> AuthServiceClient<Channel> {
        self.grpc.clone()
    }

    /// The database this server uses.
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// The development mailbox folder (when no SMTP relay is configured).
    pub fn mailbox_dir(&self) -> std::path::PathBuf {
        self.data_dir.path.join("mailbox")
    }

    /// Starts a graceful shutdown, as SIGTERM does; `stopped` awaits it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

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
