//! Callers that go away mid-request: the request's transaction still ends
//! cleanly (committed or rolled back), so the pool's connections stay
//! usable and PostgreSQL never sees a transaction statement out of place.
//! Runs the real binary, whose log shows what the driver hears from
//! PostgreSQL (its warnings arrive as notices on the connection).

use std::time::Duration;

use latchkey::proto::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};

use crate::{
    client::{ApiClient, Transport},
    helpers::{Backend, Served, SmtpSink, TempDir, TestDb, TestPool, create_scoped_key},
    tenants::with_key,
};

#[tokio::test]
async fn cancelled_grpc_calls_leave_connections_clean() {
    cancelled_calls_leave_connections_clean(Transport::Grpc).await;
}

#[tokio::test]
async fn cancelled_http_calls_leave_connections_clean() {
    cancelled_calls_leave_connections_clean(Transport::Http).await;
}

/// The AdminService's writes (gRPC only) too: API keys created and revoked
/// by callers that give up at random points.
#[tokio::test]
async fn cancelled_admin_calls_leave_connections_clean() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let admin_key = create_scoped_key(
        &dir.path,
        "admin",
        &[("LATCHKEY_DATABASE_URL", db.url.as_str())],
    )
    .await;
    let mut served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_DATABASE_URL", db.url.as_str()),
            ("LATCHKEY_SMTP_URL", smtp.url().as_str()),
            ("LATCHKEY_DATABASE_MAX_CONNECTIONS", "4"),
            ("LATCHKEY_LOG", "info"),
        ],
    )
    .await;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (grpc, admin_key) = (served.grpc.clone(), admin_key.clone());
            tokio::spawn(async move {
                let mut cancelled = 0;
                for round in 0..ROUNDS {
                    let admin = AdminServiceClient::connect(format!("http://{grpc}"))
                        .await
                        .unwrap();
                    let create = proto::CreateApiKeyRequest {
                        tenant_id: "default".to_owned(),
                        name: format!("k-{w}-{round}"),
                        ..Default::default()
                    };
                    let Some(created) = abandon(&mut cancelled, async {
                        admin
                            .clone()
                            .create_api_key(with_key(create, &admin_key))
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|e| format!("{e:?}"))
                    })
                    .await
                    else {
                        continue;
                    };
                    let revoke = proto::RevokeApiKeyRequest {
                        prefix: created.api_key.unwrap().prefix,
                    };
                    abandon(&mut cancelled, async {
                        admin
                            .clone()
                            .revoke_api_key(with_key(revoke, &admin_key))
                            .await
                            .map_err(|e| format!("{e:?}"))
                    })
                    .await;
                }
                cancelled
            })
        })
        .collect();
    let mut cancelled = 0;
    for worker in workers {
        cancelled += worker.await.unwrap();
    }
    assert!(cancelled > 0, "no call was cancelled");
    assert_clean(&db, &mut served, cancelled).await;
}

/// What PostgreSQL says, or the pool does, when a connection comes back in
/// the wrong transaction state.
const DIRTY_CONNECTION: [&str; 3] = [
    "there is no transaction in progress",
    "there is already a transaction in progress",
    "error occurred while testing the connection on-release",
];

const WORKERS: usize = 16;
const ROUNDS: usize = 16;

async fn cancelled_calls_leave_connections_clean(transport: Transport) {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let envs = [
        ("LATCHKEY_DATABASE_URL", db.url.as_str()),
        ("LATCHKEY_LOG", "error"),
    ];
    let key = create_scoped_key(&dir.path, "app", &envs).await;
    let mut served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_DATABASE_URL", db.url.as_str()),
            ("LATCHKEY_SMTP_URL", smtp.url().as_str()),
            // Few connections, so each one serves many cancelled calls.
            ("LATCHKEY_DATABASE_MAX_CONNECTIONS", "4"),
            ("LATCHKEY_RATE_LIMIT_EMAIL", "0"),
            ("LATCHKEY_RATE_LIMIT_IP", "0"),
            ("LATCHKEY_RATE_LIMIT_TENANT", "0"),
            ("LATCHKEY_LOG", "info"),
        ],
    )
    .await;
    let (grpc, http) = (served.grpc.clone(), served.http.clone());
    // Each login on a connection of its own, as separate clients.
    let client = move || {
        let (grpc, http, key) = (grpc.clone(), http.clone(), key.clone());
        async move {
            match transport {
                Transport::Grpc => ApiClient::Grpc {
                    client: AuthServiceClient::connect(format!("http://{grpc}"))
                        .await
                        .unwrap(),
                    key: Some(key),
                },
                Transport::Http => ApiClient::Http {
                    client: reqwest::Client::new(),
                    base: format!("http://{http}"),
                    key: Some(key),
                },
            }
        }
    };

    // Logins whose calls the client abandons at random points: a dropped
    // gRPC call resets its stream, a dropped HTTP request closes its
    // connection; then the client disconnects.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let client = client.clone();
            let smtp = smtp.clone();
            tokio::spawn(async move {
                let mut cancelled = 0;
                for round in 0..ROUNDS {
                    let email = format!("cancel-{w}-{round}@example.com");
                    cancelled += abandoned_login(&client().await, &smtp, &email).await;
                }
                cancelled
            })
        })
        .collect();
    let mut cancelled = 0;
    for worker in workers {
        cancelled += worker.await.unwrap();
    }
    assert!(cancelled > 0, "no call was cancelled");

    // Every following call succeeds, on every connection of the pool.
    let logins: Vec<_> = (0..WORKERS)
        .map(|w| {
            let client = client.clone();
            let smtp = smtp.clone();
            tokio::spawn(async move {
                full_login(&client().await, &smtp, &format!("after-{w}@example.com")).await
            })
        })
        .collect();
    for login in logins {
        login.await.unwrap();
    }

    // No connection is left inside a transaction...
    assert_clean(&db, &mut served, cancelled).await;
    // ...and nothing is half-written: every login has its email, every
    // verified login its user and refresh token.
    let pool = TestPool::connect(&db).await;
    assert_eq!(
        pool.strings(
            "SELECT id FROM auth_sessions s \
             WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.session_id = s.id)"
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        pool.strings(
            "SELECT id FROM auth_sessions s WHERE state = 'active' \
             AND (user_id IS NULL OR verified_at IS NULL \
                  OR NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id))"
        )
        .await,
        Vec::<String>::new()
    );
    pool.close().await;
}

/// No connection of the server is left busy or inside a transaction, and
/// (once it has exited) its log holds none of the notices of a transaction
/// statement out of place.
async fn assert_clean(db: &TestDb, served: &mut Served, cancelled: usize) {
    let pool = TestPool::connect(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let busy = pool
            .strings(
                "SELECT pid::text || ' ' || state || ': ' || query FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND state IS NOT NULL AND state <> 'idle'",
            )
            .await;
        if busy.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections left busy or inside a transaction: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    served.terminate().await;
    assert!(served.exited().await.success());
    let log = served.rest_of_log().await;
    let dirty: Vec<_> = log
        .iter()
        .filter(|line| DIRTY_CONNECTION.iter().any(|w| line.contains(w)))
        .collect();
    assert!(
        dirty.is_empty(),
        "{cancelled} cancelled calls left connections dirty:\n{dirty:#?}"
    );
}

/// A login whose calls may each be abandoned after a random moment.
/// Returns how many were.
async fn abandoned_login(api: &ApiClient, smtp: &SmtpSink, email: &str) -> usize {
    let mut cancelled = 0;
    let Some(started) = abandon(&mut cancelled, api.start_auth(start(email))).await else {
        return cancelled;
    };
    let code = smtp.wait_for(email).await.code();
    let Some(verified) = abandon(
        &mut cancelled,
        api.verify(proto::VerifyRequest {
            session_id: started.session_id,
            code,
            ..Default::default()
        }),
    )
    .await
    else {
        return cancelled;
    };
    abandon(
        &mut cancelled,
        api.refresh(proto::RefreshRequest {
            refresh_token: verified.refresh_token,
        }),
    )
    .await;
    cancelled
}

/// The call's answer, or `None` when the client gave up on it first: half
/// the calls are abandoned after 0-24 ms (inside a transaction, as often as
/// not).
async fn abandon<T, E: std::fmt::Debug>(
    cancelled: &mut usize,
    call: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let patience = match rand::random_range(0..50) {
        ms @ 0..25 => Duration::from_millis(ms),
        _ => Duration::from_secs(30),
    };
    match tokio::time::timeout(patience, call).await {
        Ok(answer) => Some(answer.unwrap_or_else(|e| panic!("a call that ran failed: {e:?}"))),
        Err(_) => {
            *cancelled += 1;
            None
        }
    }
}

async fn full_login(api: &ApiClient, smtp: &SmtpSink, email: &str) {
    let started = api.start_auth(start(email)).await.unwrap();
    let code = smtp.wait_for(email).await.code();
    let verified = api
        .verify(proto::VerifyRequest {
            session_id: started.session_id,
            code,
            ..Default::default()
        })
        .await
        .unwrap();
    api.refresh(proto::RefreshRequest {
        refresh_token: verified.refresh_token,
    })
    .await
    .unwrap();
}

fn start(email: &str) -> proto::StartAuthRequest {
    proto::StartAuthRequest {
        email: email.to_owned(),
        method: proto::Method::Code.into(),
        ..Default::default()
    }
}
