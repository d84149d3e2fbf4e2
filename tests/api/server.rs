use std::time::Duration;

use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

both_backends!(a_call_in_flight_when_shutdown_starts_completes);

async fn health_client(app: &TestApp) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test]
async fn health_is_serving_and_goes_not_serving_first_on_shutdown() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut health = health_client(&app).await;
    for service in ["", "latchkey.v1.AuthService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "latchkey.v1.AuthService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    app.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);
    drop(health);
    let mut app = app;
    tokio::time::timeout(Duration::from_secs(3), app.stopped())
        .await
        .expect("shutdown does not wait for the grace period")
        .unwrap();
}

#[tokio::test]
async fn reflection_lists_the_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"latchkey.v1.AuthService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "latchkey.v1.AuthService".into(),
            ),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

/// Holds the database's write lock so the next write call blocks; the call
/// is in flight when shutdown starts and must still complete.
async fn a_call_in_flight_when_shutdown_starts_completes(backend: Backend) {
    let app = spawn_app(backend).await;
    let lock = app.hold_write_lock().await;

    let api = app.api.clone();
    let call = tokio::spawn(async move {
        api.start_auth(latchkey::proto::StartAuthRequest {
            email: "late@example.com".into(),
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "the call should be blocked on the lock"
    );

    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release().await;

    let response = call.await.unwrap().expect("in-flight call completes");
    assert!(!response.session_id.is_empty());
    let mut app = app;
    app.stopped().await.expect("server exits cleanly");
}

#[tokio::test]
async fn invalid_configuration_exits_non_zero_naming_the_setting() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env("LATCHKEY_CODE_LENGTH", "4")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("code-length"));

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env("LATCHKEY_ACCESS_TOKEN_TTL", "2h")
        .env("LATCHKEY_SESSION_TTL", "1h")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LATCHKEY_ACCESS_TOKEN_TTL"));

    let dir = crate::helpers::TempDir::new();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env("LATCHKEY_DATA_DIR", &dir.path)
        .env("LATCHKEY_KEY_ENCRYPTION_KEY", "too-short")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LATCHKEY_KEY_ENCRYPTION_KEY"));
}

/// The database goes away (a forwarder the test controls is cut): calls
/// that need it answer UNAVAILABLE on both transports, the `latchkey.database`
/// health service goes NOT_SERVING, but readiness stays SERVING on both
/// health surfaces and JWKS keeps answering (every replica shares the one
/// database: taking them all out of a load balancer would only take JWKS
/// and health down too). Everything recovers when it returns, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_unavailable_but_leaves_the_service_ready_and_recovers() {
    use crate::helpers::TestDb;
    let db = TestDb::new(Backend::Postgres).await;
    let (forwarder, via_forwarder) = forwarded(&db).await;
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.database_url = Some(latchkey::config::Secret::new(via_forwarder));
        s.database_acquire_timeout = Duration::from_millis(500);
        s.readiness_interval = Duration::from_millis(100);
    })
    .await;
    let http_api = crate::client::ApiClient::Http {
        client: app.http.clone(),
        base: app.http_base.clone(),
        key: Some(app.key.clone()),
    };
    app.login("before@example.com").await;
    wait_database(&app, ServingStatus::Serving).await;

    forwarder.cut();
    let grpc = app.start_auth("during@example.com").await.unwrap_err();
    assert_eq!(grpc.code, "UNAVAILABLE");
    grpc.assert_status(tonic::Code::Unavailable, 503);
    let http = http_api
        .start_auth(latchkey::proto::StartAuthRequest {
            email: "during@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((http.code.as_str(), http.http), ("UNAVAILABLE", Some(503)));
    wait_database(&app, ServingStatus::NotServing).await;
    // Still ready, and what needs no database still works.
    assert_ready(&app).await;
    assert!(!app.jwks().await.keys.is_empty());
    let jwks = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);

    forwarder.restore();
    wait_database(&app, ServingStatus::Serving).await;
    assert_ready(&app).await;
    app.login("after@example.com").await;
}

/// Both health surfaces say the service is ready.
async fn assert_ready(app: &TestApp) {
    let mut health = health_client(app).await;
    for service in ["", "latchkey.v1.AuthService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let http = app
        .http
        .get(format!("{}/readyz", app.http_base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(http, 200);
}

/// Polls the `latchkey.database` health service until it reports `want`.
async fn wait_database(app: &TestApp, want: ServingStatus) {
    let mut health = health_client(app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: latchkey::server::DATABASE_SERVICE.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == want as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A forwarder the test controls in front of `db`'s PostgreSQL, and the
/// database URL through it.
pub async fn forwarded(db: &crate::helpers::TestDb) -> (crate::helpers::Forwarder, String) {
    let authority = url_authority(&db.url);
    let upstream = tokio::net::lookup_host(&authority)
        .await
        .unwrap()
        .next()
        .unwrap();
    let forwarder = crate::helpers::Forwarder::start(upstream).await;
    let via = db.url.replacen(&authority, &forwarder.addr.to_string(), 1);
    (forwarder, via)
}

/// `host:port` of a postgres URL.
fn url_authority(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// Managed PostgreSQL services usually require TLS: with `sslmode=require`
/// in the URL every connection of the service is encrypted. (The machine's
/// PostgreSQL has TLS on, with Debian's self-signed certificate, which
/// `require` accepts without verifying it.)
#[tokio::test]
async fn postgres_connections_are_encrypted_when_the_url_asks() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        let url = s.database_url.as_ref().unwrap().expose().to_owned();
        let separator = if url.contains('?') { '&' } else { '?' };
        s.database_url = Some(latchkey::config::Secret::new(format!(
            "{url}{separator}sslmode=require"
        )));
    })
    .await;
    app.login("tls@example.com").await;
    let connections = app
        .db_pool()
        .await
        .strings(
            "SELECT CAST(s.ssl AS TEXT) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
        )
        .await;
    assert!(!connections.is_empty());
    assert!(
        connections.iter().all(|ssl| ssl == "true"),
        "{connections:?}"
    );
}

/// A database outage is logged as it starts and as it ends, not once per
/// refused call (the real binary on PostgreSQL behind a forwarder, its JSON
/// log).
#[tokio::test]
async fn a_database_outage_is_logged_once_not_per_call() {
    use crate::helpers::{Served, SmtpSink, TempDir, TestDb};
    let db = TestDb::new(Backend::Postgres).await;
    let (forwarder, via_forwarder) = forwarded(&db).await;
    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let smtp_url = smtp.url();
    let envs = [
        ("LATCHKEY_DATABASE_URL", via_forwarder.as_str()),
        ("LATCHKEY_SMTP_URL", smtp_url.as_str()),
        ("LATCHKEY_DATABASE_ACQUIRE_TIMEOUT", "300ms"),
        ("LATCHKEY_READINESS_INTERVAL", "100ms"),
        ("LATCHKEY_LOG", "info"),
    ];
    let created = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["apikey", "create", "--name", "tests"])
        .envs(envs)
        .env("LATCHKEY_DATA_DIR", &dir.path)
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let mut served = Served::start(&dir.path, &envs).await;
    let http = reqwest::Client::new();
    let start = || {
        http.post(format!("http://{}/auth/start", served.http))
            .bearer_auth(&key)
            .json(&serde_json::json!({"email": "ops@example.com"}))
            .send()
    };
    // The database as this process last saw it (its own check).
    let health = HealthClient::new(served.grpc_channel().await);
    let database_up = || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: latchkey::server::DATABASE_SERVICE.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
                == ServingStatus::Serving as i32
        }
    };
    assert_eq!(start().await.unwrap().status(), 200);

    forwarder.cut();
    for _ in 0..10 {
        assert_eq!(start().await.unwrap().status(), 503);
    }
    while database_up().await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    forwarder.restore();
    while !database_up().await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(start().await.unwrap().status(), 200);
    served.terminate().await;
    assert!(served.exited().await.success());

    let log: Vec<serde_json::Value> = served
        .rest_of_log()
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_owned();
    let said = |text: &str| log.iter().filter(|l| message(l) == text).count();
    assert_eq!(
        said("the database is failing (logged once, until it works again)"),
        1,
        "{log:#?}"
    );
    assert_eq!(said("the database works again"), 1, "{log:#?}");
    // Ten refused calls, a few warnings of ours: each at most once. (sqlx's
    // own pool warns once per broken connection it drops: bounded by the
    // pool's size, not by the calls, and not ours to word.)
    let warnings: Vec<String> = log
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("latchkey"))
        })
        .map(message)
        .collect();
    assert!(!warnings.is_empty(), "the outage logged no warning of ours");
    let mut distinct = warnings.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(warnings.len(), distinct.len(), "{warnings:#?}");
}
