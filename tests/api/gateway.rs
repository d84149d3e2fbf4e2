//! What only the HTTP side has: seed-style clients, HTTP framing errors,
//! JWKS caching, health endpoints, the OpenAPI document, grpc-web and CORS.
//! (Every AuthService behaviour runs over both transports in the other
//! modules.)

use latchkey::proto;
use prost::Message;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Case, Transport, spawn_app, spawn_app_with};

both_backends!(a_seed_style_client_logs_in_with_plain_json);

/// A backend written against the seed products' examples: `POST /auth/start
/// {email}` -> `{sessionId}`, `POST /auth/verify {sessionId, code}` ->
/// `{token, user}`, nothing else.
async fn a_seed_style_client_logs_in_with_plain_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let http = reqwest::Client::new();

    let started: Value = http
        .post(format!("{}/auth/start", app.http_base))
        .bearer_auth(&app.key)
        .json(&json!({ "email": "seed@example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = started["sessionId"].as_str().expect("sessionId");

    let code = app.smtp.wait_for("seed@example.com").await.code();
    let response = http
        .post(format!("{}/auth/verify", app.http_base))
        .bearer_auth(&app.key)
        .json(&json!({ "sessionId": session_id, "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let verified: Value = response.json().await.unwrap();
    assert!(verified["token"].as_str().unwrap().starts_with("eyJ"));
    assert_eq!(verified["user"]["email"], "seed@example.com");
    assert_eq!(verified["tokenType"], "Bearer");
    assert_eq!(verified["newUser"], true);
    assert!(verified["expiresIn"].is_number());
}

#[tokio::test]
async fn framing_errors_get_the_json_error_shape_and_change_nothing() {
    let app = spawn_app(Case {
        backend: Backend::Sqlite,
        transport: Transport::Http,
    })
    .await;
    app.login("someone@example.com").await;
    let before = app.snapshot().await;
    let http = &app.http;
    let url = |p: &str| format!("{}{p}", app.http_base);

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "text body",
            http.post(url("/auth/start"))
                .bearer_auth(&app.key)
                .header("content-type", "text/plain")
                .body(r#"{"email":"a@example.com"}"#),
            415,
            "INVALID_ARGUMENT",
        ),
        (
            "no content type",
            http.post(url("/auth/start"))
                .bearer_auth(&app.key)
                .body(r#"{"email":"a@example.com"}"#),
            415,
            "INVALID_ARGUMENT",
        ),
        (
            "malformed JSON",
            http.post(url("/auth/start"))
                .bearer_auth(&app.key)
                .header("content-type", "application/json")
                .body(r#"{"email": "a@example.com""#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "trailing garbage",
            http.post(url("/auth/start"))
                .bearer_auth(&app.key)
                .header("content-type", "application/json")
                .body(r#"{"email": "a@example.com"} {}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "oversized body",
            http.post(url("/auth/start"))
                .bearer_auth(&app.key)
                .json(&json!({ "email": "a@example.com", "validationUrl": "x".repeat(70_000) })),
            413,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown path",
            http.post(url("/auth/teleport")).json(&json!({})),
            404,
            "NOT_FOUND",
        ),
        (
            "wrong method",
            http.get(url("/auth/start")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (name, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{name}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{name}: {body}");
        assert!(
            !body["error"].as_str().unwrap().is_empty(),
            "{name}: a message"
        );
    }
    assert_eq!(app.snapshot().await, before);

    // A charset parameter and snake_case names are fine; unknown fields are ignored.
    let response = http
        .post(url("/auth/start"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"email":"b@example.com","method":"METHOD_CODE","client":{"user_agent":"curl"},"future":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_jwks_is_cacheable_and_revalidates_with_its_etag() {
    let app = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/.well-known/jwks.json", app.http_base);
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();

    // RFC 7517 shape: members that do not apply are absent, not empty.
    let key = &body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["use"], "sig");
    assert!(key.get("n").is_none() && key.get("y").is_none());
    // The same keys as gRPC GetJwks.
    let grpc = app
        .grpc_client()
        .get_jwks(proto::GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key["kid"], grpc.keys[0].kid.as_str());
    assert_eq!(key["x"], grpc.keys[0].x.as_str());

    let again = app
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    let other = app
        .http
        .get(&url)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in ["/healthz", "/readyz"] {
        let response = app
            .http
            .get(format!("{}{path}", app.http_base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "SERVING");
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_matches_the_routes() {
    let app = spawn_app(Backend::Sqlite).await;
    let served = app
        .http
        .get(format!("{}/openapi.json", app.http_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, include_str!("../../docs/openapi.json"));
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Every documented operation is routed (not 404/405)...
    let routes = latchkey::api::openapi::documented_routes();
    assert_eq!(routes.len(), 23);
    for (method, path) in &routes {
        let path = &path.replace("{tenant}", "default");
        let request = match method.as_str() {
            "GET" => app.http.get(format!("{}{path}", app.http_base)),
            "POST" => app
                .http
                .post(format!("{}{path}", app.http_base))
                .json(&json!({})),
            other => panic!("unexpected method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
        // ...and the other method on the same path is not.
        let wrong = match method.as_str() {
            "GET" => app.http.post(format!("{}{path}", app.http_base)),
            _ => app.http.get(format!("{}{path}", app.http_base)),
        };
        assert_eq!(wrong.send().await.unwrap().status(), 405, "{path}");
    }
}

/// A grpc-web unary call: a length-prefixed message in, a data frame and a
/// trailer frame out, over HTTP/1.1 on the gRPC port.
#[tokio::test]
async fn grpc_web_works_on_the_grpc_port_over_http1() {
    let app = spawn_app(Backend::Sqlite).await;
    let message = proto::GetJwksRequest::default().encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);

    let response = app
        .http
        .post(format!(
            "http://{}/latchkey.v1.AuthService/GetJwks",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let bytes = response.bytes().await.unwrap();

    assert_eq!(bytes[0], 0, "a data frame first");
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    let jwks = proto::GetJwksResponse::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let trailer = &bytes[5 + len..];
    assert_eq!(trailer[0], 0x80, "then the trailer frame");
    assert!(String::from_utf8_lossy(&trailer[5..]).contains("grpc-status:0"));
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    let preflight = |app: &crate::helpers::TestApp, origin: &str, url: String| {
        app.http
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let closed = spawn_app(Backend::Sqlite).await;
    let r = preflight(
        &closed,
        "https://app.test",
        format!("{}/auth/start", closed.http_base),
    )
    .await
    .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let open = spawn_app_with(Backend::Sqlite, |s| {
        s.cors_allowed_origins = vec!["https://app.test".into()];
    })
    .await;
    for url in [
        format!("{}/auth/start", open.http_base),
        format!("http://{}/latchkey.v1.AuthService/StartAuth", open.addr),
    ] {
        let allowed = preflight(&open, "https://app.test", url.clone())
            .await
            .unwrap();
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://app.test",
            "{url}"
        );
        let denied = preflight(&open, "https://evil.test", url.clone())
            .await
            .unwrap();
        assert!(
            denied
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{url}"
        );
    }
}
