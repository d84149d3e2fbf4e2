//! Operating the binary: metrics, exported traces, JSON logs, health and
//! SIGTERM, each asserted on a real `latchkey serve` process (the metrics
//! recorder and the trace exporter are process-wide, so in-process servers
//! sharing this test binary could not be counted exactly).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use latchkey::proto::{
    self, RefreshRequest, StartAuthRequest, VerifyRequest, auth_service_client::AuthServiceClient,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Served, SmtpSink, TempDir, create_key};

/// The internal header carrying a call's machine code to the metrics layer.
const CODE_HEADER: &str = "latchkey-code";

/// A gRPC request carrying the API key (and a `traceparent`, when given).
fn request<T>(message: T, key: &str, traceparent: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {key}").parse().unwrap());
    if let Some(tp) = traceparent {
        metadata.insert("traceparent", tp.parse().unwrap());
    }
    request
}

/// Starts a code login over the JSON gateway (with a `traceparent`, when
/// given); returns its session id.
async fn start_code_login(
    served: &Served,
    key: &str,
    email: &str,
    traceparent: Option<&str>,
) -> String {
    let mut post = reqwest::Client::new()
        .post(format!("http://{}/auth/start", served.http))
        .bearer_auth(key)
        .json(&serde_json::json!({"email": email, "method": "METHOD_CODE"}));
    if let Some(tp) = traceparent {
        post = post.header("traceparent", tp);
    }
    let started: serde_json::Value = post.send().await.unwrap().json().await.unwrap();
    started["sessionId"].as_str().unwrap().to_owned()
}

/// The samples of `/metrics` as `name{labels}` → value.
async fn metrics(served: &Served) -> HashMap<String, f64> {
    let response = reqwest::get(format!("http://{}/metrics", served.metrics))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn sample(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples.get(name).unwrap_or_else(|| {
        let mut names: Vec<_> = samples.keys().collect();
        names.sort();
        panic!("no sample {name} in {names:#?}")
    })
}

/// A login over both transports, a wrong code, a refresh and a reused
/// refresh token show up as exact counts, and no label carries an address.
#[tokio::test]
async fn metrics_count_calls_logins_verifications_refreshes_and_emails() {
    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let key = create_key(&dir.path).await;
    let served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_SMTP_URL", smtp.url().as_str()),
            ("LATCHKEY_REFRESH_REUSE_GRACE", "1ms"),
        ],
    )
    .await;
    let mut grpc = AuthServiceClient::new(served.grpc_channel().await);
    let http = reqwest::Client::new();

    // StartAuth over HTTP, a wrong then the right code over gRPC.
    let session_id = start_code_login(&served, &key, "ops@example.com", None).await;
    let code = smtp.wait_for("ops@example.com").await.code();
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let verify = |code: &str| VerifyRequest {
        session_id: session_id.clone(),
        code: code.to_owned(),
        ..Default::default()
    };
    let err = grpc
        .verify(request(verify(&wrong), &key, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // The machine code travels to the metrics layer in an internal header
    // that never reaches the caller.
    assert!(err.metadata().get(CODE_HEADER).is_none(), "{err:?}");
    let verified = grpc
        .verify(request(verify(&code), &key, None))
        .await
        .unwrap()
        .into_inner();
    // A refresh, then the used token again after the (1 ms) grace: theft.
    let refresh = RefreshRequest {
        refresh_token: verified.refresh_token.clone(),
    };
    grpc.refresh(request(refresh.clone(), &key, None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    grpc.refresh(request(refresh, &key, None))
        .await
        .unwrap_err();
    // A call without a key is counted by its code too.
    let unauthenticated = http
        .post(format!("http://{}/auth/start", served.http))
        .json(&serde_json::json!({"email": "ops@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert!(unauthenticated.headers().get(CODE_HEADER).is_none());

    // An oversized request is refused as bad input, like any other.
    let err = grpc
        .start_auth(request(
            StartAuthRequest {
                email: "x".repeat(100 * 1024),
                ..Default::default()
            },
            &key,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.metadata().get(CODE_HEADER).is_none(), "{err:?}");

    // The gateway does not serve the metrics: they have their own listener.
    let gateway = reqwest::get(format!("http://{}/metrics", served.http))
        .await
        .unwrap();
    assert_eq!(gateway.status(), 404);

    // The email's delivery is recorded just after the mail server took it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = metrics(&served).await;
        if m.get("latchkey_emails_total{event=\"sent\"}") == Some(&1.0)
            || tokio::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rpc = |transport: &str, method: &str, code: &str| {
        format!(
            "latchkey_rpc_requests_total{{transport=\"{transport}\",method=\"{method}\",code=\"{code}\"}}"
        )
    };
    assert_eq!(sample(&m, &rpc("http", "StartAuth", "OK")), 1.0);
    assert_eq!(
        sample(&m, &rpc("http", "StartAuth", "UNAUTHENTICATED")),
        1.0
    );
    assert_eq!(sample(&m, &rpc("grpc", "Verify", "CODE_INVALID")), 1.0);
    assert_eq!(
        sample(&m, &rpc("grpc", "StartAuth", "INVALID_ARGUMENT")),
        1.0
    );
    assert_eq!(sample(&m, &rpc("grpc", "Verify", "OK")), 1.0);
    assert_eq!(sample(&m, &rpc("grpc", "Refresh", "OK")), 1.0);
    assert_eq!(
        sample(&m, &rpc("grpc", "Refresh", "REFRESH_TOKEN_REUSED")),
        1.0
    );
    // Latency histograms with the same labels.
    let histogram =
        "latchkey_rpc_duration_seconds_count{transport=\"grpc\",method=\"Verify\",code=\"OK\"}";
    assert_eq!(sample(&m, histogram), 1.0);
    let le_inf = "latchkey_rpc_duration_seconds_bucket{transport=\"grpc\",method=\"Verify\",code=\"OK\",le=\"+Inf\"}";
    assert_eq!(sample(&m, le_inf), 1.0);

    assert_eq!(
        sample(&m, "latchkey_logins_started_total{method=\"code\"}"),
        1.0
    );
    let verifications = |result: &str| {
        format!("latchkey_verifications_total{{proof=\"code\",result=\"{result}\"}}")
    };
    assert_eq!(sample(&m, &verifications("invalid")), 1.0);
    assert_eq!(sample(&m, &verifications("ok")), 1.0);
    assert_eq!(sample(&m, "latchkey_refreshes_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        sample(&m, "latchkey_refreshes_total{result=\"reused\"}"),
        1.0
    );
    assert_eq!(sample(&m, "latchkey_emails_total{event=\"queued\"}"), 1.0);
    assert_eq!(sample(&m, "latchkey_emails_total{event=\"sent\"}"), 1.0);
    assert_eq!(sample(&m, "latchkey_outbox_depth"), 0.0);
    assert_eq!(sample(&m, "latchkey_outbox_oldest_age_seconds"), 0.0);
    assert!(sample(&m, "latchkey_db_connections_max") >= 1.0);
    let in_use = sample(&m, "latchkey_db_connections{state=\"in_use\"}");
    let idle = sample(&m, "latchkey_db_connections{state=\"idle\"}");
    assert_eq!(sample(&m, "latchkey_database_up"), 1.0);
    assert!(in_use + idle >= 1.0, "{in_use} + {idle}");
    // Nothing personal in any label.
    for name in m.keys() {
        assert!(!name.contains("example.com"), "{name}");
        assert!(!name.contains(&session_id), "{name}");
    }
}

/// An exported span with its resource's attributes.
type Exported = (Vec<KeyValue>, Span);

/// Every exported span.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((resource.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            Some(any_value::Value::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A login whose calls carry the caller's `traceparent` (an HTTP header on
/// StartAuth, gRPC metadata on Verify) is exported over OTLP/gRPC to a real
/// receiver as spans of the caller's traces, with database and SMTP child
/// spans, the standard resource variables, and no secret anywhere; the JSON
/// log lines of those calls carry the trace id; SIGTERM flushes the spans.
#[tokio::test]
async fn a_login_is_exported_as_spans_of_the_callers_traces() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let key = create_key(&dir.path).await;
    let endpoint = format!("http://{otlp}");
    let mut served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_SMTP_URL", smtp.url().as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "latchkey-under-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci"),
        ],
    )
    .await;

    let start_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let start_parent = "00f067aa0ba902b7";
    let session_id = start_code_login(
        &served,
        &key,
        "trace@example.com",
        Some(&format!("00-{start_trace}-{start_parent}-01")),
    )
    .await;
    let code = smtp.wait_for("trace@example.com").await.code();

    let verify_trace = "0af7651916cd43dd8448eb211c80319c";
    let verify_parent = "b7ad6b7169203331";
    let mut grpc = AuthServiceClient::new(served.grpc_channel().await);
    let verified = grpc
        .verify(request(
            VerifyRequest {
                session_id: session_id.clone(),
                code: code.clone(),
                ..Default::default()
            },
            &key,
            Some(&format!("00-{verify_trace}-{verify_parent}-01")),
        ))
        .await
        .unwrap()
        .into_inner();

    // The log lines of each call carry its caller's trace id.
    let line = served
        .log_line(|v| v["fields"]["message"] == "login started")
        .await;
    assert_eq!(line["trace_id"], start_trace, "{line}");
    let line = served
        .log_line(|v| v["fields"]["message"] == "login verified")
        .await;
    assert_eq!(line["trace_id"], verify_trace, "{line}");
    assert_eq!(line["fields"]["session_id"], session_id.as_str(), "{line}");

    // SIGTERM flushes what is still buffered, then the process exits 0.
    served.terminate().await;
    assert!(served.exited().await.success());
    let log = served.rest_of_log().await;
    let spans = collector.spans.lock().unwrap().clone();
    receiver.abort();
    assert!(!spans.is_empty(), "nothing was exported");

    let of_trace = |trace: &str| -> Vec<&Exported> {
        spans
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace)
            .collect()
    };
    for (trace, parent, method, path) in [
        (start_trace, start_parent, "StartAuth", "http"),
        (verify_trace, verify_parent, "Verify", "grpc"),
    ] {
        let spans = of_trace(trace);
        let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
        // The RPC's span is the child of the caller's span...
        let (resource, rpc) = spans
            .iter()
            .find(|(_, s)| hex(&s.parent_span_id) == parent)
            .unwrap_or_else(|| panic!("no span under the caller's in {names:?}"));
        assert_eq!(
            attribute(&rpc.attributes, "rpc.method").as_deref(),
            Some(method)
        );
        assert_eq!(
            attribute(&rpc.attributes, "rpc.system").as_deref(),
            Some(path)
        );
        assert_eq!(
            attribute(&rpc.attributes, "tenant").as_deref(),
            Some("default")
        );
        assert_eq!(attribute(&rpc.attributes, "code").as_deref(), Some("OK"));
        assert_eq!(
            attribute(resource, "service.name").as_deref(),
            Some("latchkey-under-test")
        );
        assert_eq!(
            attribute(resource, "deployment.environment.name").as_deref(),
            Some("ci")
        );
        // ...with the database work below it, in the same trace.
        assert!(
            spans.iter().any(|(_, s)| {
                attribute(&s.attributes, "db.system.name").as_deref() == Some("sqlite")
            }),
            "no database span in {names:?}"
        );
        assert!(names.contains(&"db commit"), "{names:?}");
    }
    // The Verify span names the session.
    let verify_spans = of_trace(verify_trace);
    assert!(
        verify_spans
            .iter()
            .any(|(_, s)| attribute(&s.attributes, "session_id").as_deref()
                == Some(session_id.as_str())),
        "no span names the session"
    );
    // The email was sent under a span of its own, in the outbox worker's
    // trace, not the caller's.
    let smtp_span = spans
        .iter()
        .find(|(_, s)| s.name == "smtp send")
        .map(|(_, s)| hex(&s.trace_id))
        .expect("an SMTP span");
    assert_ne!(smtp_span, start_trace);
    assert_ne!(smtp_span, verify_trace);
    // No secret in any exported value (names, attributes, events) or in the
    // log.
    let secrets = [
        code.as_str(),
        verified.refresh_token.as_str(),
        verified.token.as_str(),
        key.as_str(),
        "trace@example.com",
    ];
    let mut exported: Vec<String> = Vec::new();
    for (_, span) in &spans {
        exported.push(span.name.clone());
        let events = span.events.iter().flat_map(|e| {
            std::iter::once(e.name.clone()).chain(
                e.attributes
                    .iter()
                    .map(|kv| format!("{}={:?}", kv.key, kv.value)),
            )
        });
        exported.extend(
            span.attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value)),
        );
        exported.extend(events);
    }
    exported.extend(log);
    for value in &exported {
        for secret in secrets {
            assert!(!value.contains(secret), "a secret in {value}");
        }
    }
}

/// SIGTERM: health goes NOT_SERVING at once while new connections are
/// still accepted for LATCHKEY_SHUTDOWN_DELAY; then open health watches end,
/// the listeners close, and a call in flight (held on an external write
/// lock until after the delay) still completes; liveness stays SERVING to
/// the end; the exit is clean and well inside the grace, with code 0.
#[tokio::test]
async fn sigterm_drains_a_call_in_flight_and_exits_zero() {
    let dir = TempDir::new();
    let smtp = SmtpSink::start();
    let key = create_key(&dir.path).await;
    let delay = Duration::from_secs(2);
    let mut served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_SMTP_URL", smtp.url().as_str()),
            ("LATCHKEY_SHUTDOWN_DELAY", "2s"),
            ("LATCHKEY_SHUTDOWN_GRACE", "20s"),
        ],
    )
    .await;
    let channel = served.grpc_channel().await;
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    for service in ["", "latchkey.v1.AuthService", "liveness"] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    // Hold the SQLite write lock from outside so the next StartAuth waits.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path.join("latchkey.db").display()
    ))
    .await
    .unwrap();
    let mut lock = db.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE tenants SET name = name")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut client = AuthServiceClient::new(channel);
    let call_key = key.clone();
    let call = tokio::spawn(async move {
        client
            .start_auth(request(
                StartAuthRequest {
                    email: "late@example.com".into(),
                    ..Default::default()
                },
                &call_key,
                None,
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the call should wait for the lock");

    served.terminate().await;
    let terminated = tokio::time::Instant::now();
    // Readiness flips first...
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    // ...while a new connection is still accepted and served during the
    // delay, and liveness is unaffected.
    let mut fresh = AuthServiceClient::new(served.grpc_channel().await);
    fresh
        .get_jwks(proto::GetJwksRequest::default())
        .await
        .expect("served during the delay");
    let ready = reqwest::get(format!("http://{}/readyz", served.http))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = reqwest::get(format!("http://{}/healthz", served.http))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let status = health
        .check(check("liveness"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // After the delay the watch ends (it must not hold the drain open) and
    // the listeners no longer accept.
    let end = tokio::time::timeout(delay * 3, watch.message())
        .await
        .expect("the watch ends after the delay");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    tokio::time::sleep_until(terminated + delay + Duration::from_millis(500)).await;
    let refused = tokio::net::TcpStream::connect(&served.http).await;
    assert!(refused.is_err(), "the HTTP listener still accepts");
    assert!(!call.is_finished(), "the call is still held");

    // The call in flight completes once the lock is gone.
    lock.rollback().await.unwrap();
    db.close().await;
    let response = call.await.unwrap().expect("the call in flight completes");
    assert!(!response.into_inner().session_id.is_empty());
    let exit = served.exited().await;
    assert!(exit.success(), "{exit:?}");
    let log = served.rest_of_log().await.join("\n");
    assert!(!log.contains("after the shutdown grace"), "{log}");
    assert!(!log.contains("did not stop in time"), "{log}");
    assert!(log.contains("\"stopped\""), "{log}");
    // Its email was queued in the same transaction, so it is not lost: it
    // went out before the exit, or the next start delivers it.
    let _next = Served::start(&dir.path, &[("LATCHKEY_SMTP_URL", smtp.url().as_str())]).await;
    smtp.wait_for("late@example.com").await;
}
