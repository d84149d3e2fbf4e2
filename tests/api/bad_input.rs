use latchkey::proto::{
    self, ClientInfo, Method, RefreshRequest, RevokeRequest, StartAuthRequest, VerifyRequest,
};
use tonic::Code;

use crate::helpers::{Case, TestApp, Transport, spawn_app_with};
use crate::matrix;

matrix!(every_bad_input_gets_a_clear_error_and_changes_nothing);

enum Call {
    /// A raw JSON body to a gateway path (what a proto message cannot carry).
    Json(&'static str, serde_json::Value),
    Start(StartAuthRequest),
    Verify(VerifyRequest),
    Refresh(RefreshRequest),
    Revoke(RevokeRequest),
    Resend(proto::ResendCodeRequest),
    List(proto::ListSessionsRequest),
    RevokeSession(proto::RevokeSessionRequest),
    RevokeAll(proto::RevokeAllSessionsRequest),
    Introspect(proto::IntrospectTokenRequest),
}

impl Call {
    async fn send(self, app: &TestApp) -> crate::helpers::ApiError {
        let api = &app.api;
        let result = match self {
            Call::Json(path, body) => {
                let response = app
                    .http
                    .post(format!("{}{path}", app.http_base))
                    .bearer_auth(&app.key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                return crate::helpers::ApiError {
                    code: body["code"].as_str().unwrap().to_owned(),
                    field: body["field"].as_str().unwrap_or_default().to_owned(),
                    message: body["error"].as_str().unwrap().to_owned(),
                    grpc: None,
                    http: Some(status),
                    retry_after: None,
                };
            }
            Call::Start(r) => api.start_auth(r).await.map(|_| ()),
            Call::Verify(r) => api.verify(r).await.map(|_| ()),
            Call::Refresh(r) => api.refresh(r).await.map(|_| ()),
            Call::Revoke(r) => api.revoke(r).await.map(|_| ()),
            Call::Resend(r) => api.resend_code(r).await.map(|_| ()),
            Call::List(r) => api.list_sessions(r).await.map(|_| ()),
            Call::RevokeSession(r) => api.revoke_session(r).await.map(|_| ()),
            Call::RevokeAll(r) => api.revoke_all_sessions(r).await.map(|_| ()),
            Call::Introspect(r) => api.introspect_token(r).await.map(|_| ()),
        };
        result.expect_err("a bad input must be refused")
    }
}

fn start(email: &str) -> StartAuthRequest {
    StartAuthRequest {
        email: email.into(),
        ..Default::default()
    }
}

async fn every_bad_input_gets_a_clear_error_and_changes_nothing(case: Case) {
    let app = spawn_app_with(case, |s| {
        s.allowed_validation_urls = vec!["https://app.test/auth".into()];
    })
    .await;
    // Some state to protect: an active session and a pending one.
    let active = app.login("known@example.com").await;
    let (pending, _code) = app.start_and_read_code("known@example.com").await;
    let before = app.snapshot().await;

    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(&str, Call, Code, &str, &str)> = vec![
        (
            "empty email",
            Call::Start(start("")),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "no @",
            Call::Start(start("known.example.com")),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "space inside",
            Call::Start(start("kn own@example.com")),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "header injection",
            Call::Start(start("a@example.com\r\nBcc: b@example.com")),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "over-long email",
            Call::Start(start(&format!("{}@example.com", long(250)))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "unknown method",
            match case.transport {
                // The JSON mapping names enum values; send a name it lacks.
                Transport::Http => Call::Json(
                    "/auth/start",
                    serde_json::json!({"email": "a@example.com", "method": "METHOD_TELEPATHY"}),
                ),
                Transport::Grpc => Call::Start(StartAuthRequest {
                    email: "a@example.com".into(),
                    method: 42,
                    ..Default::default()
                }),
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "method",
        ),
        (
            "wrongly typed field",
            match case.transport {
                Transport::Http => Call::Json(
                    "/auth/start",
                    serde_json::json!({"email": ["a@example.com"]}),
                ),
                // (protobuf cannot mistype a field: a blank one instead)
                Transport::Grpc => Call::Start(start(" ")),
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            "bad client ip",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                client: Some(ClientInfo {
                    ip: "not-an-ip".into(),
                    user_agent: String::new(),
                }),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "client.ip",
        ),
        (
            "over-long user agent",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                client: Some(ClientInfo {
                    ip: String::new(),
                    user_agent: long(600),
                }),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "client.user_agent",
        ),
        (
            "over-long validation url",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                validation_url: format!("https://app.test/{}", long(3000)),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "validation_url",
        ),
        (
            "oversized message",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                validation_url: long(70 * 1024),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "request",
        ),
        (
            "link without a validation url",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                method: Method::Link as i32,
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "validation_url",
        ),
        (
            "validation url not on the allowlist",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                method: Method::Link as i32,
                validation_url: "https://app.test.evil.example/auth".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "VALIDATION_URL_NOT_ALLOWED",
            "validation_url",
        ),
        (
            "javascript validation url",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                validation_url: "javascript:alert(document.cookie)".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "VALIDATION_URL_NOT_ALLOWED",
            "validation_url",
        ),
        (
            "malformed locale",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                locale: "../../etc/passwd".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "locale",
        ),
        (
            "missing session id",
            Call::Verify(VerifyRequest {
                code: "123456".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "malformed session id",
            Call::Verify(VerifyRequest {
                session_id: "1; DROP TABLE users".into(),
                code: "123456".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "missing code",
            Call::Verify(VerifyRequest {
                session_id: pending.clone(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "code",
        ),
        (
            "non-digit code",
            Call::Verify(VerifyRequest {
                session_id: pending.clone(),
                code: "12345a".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "code",
        ),
        (
            "over-long code",
            Call::Verify(VerifyRequest {
                session_id: pending.clone(),
                code: "1".repeat(11),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "code",
        ),
        (
            "code and link together",
            Call::Verify(VerifyRequest {
                session_id: pending.clone(),
                code: "123456".into(),
                link_token: "x".into(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "link_token",
        ),
        (
            "malformed link token",
            Call::Verify(VerifyRequest {
                link_token: "x".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "link_token",
        ),
        (
            "missing refresh token",
            Call::Refresh(RefreshRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "refresh_token",
        ),
        (
            "malformed refresh token",
            Call::Refresh(RefreshRequest {
                refresh_token: "Bearer abc".into(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "refresh_token",
        ),
        (
            "revoke with nothing",
            Call::Revoke(RevokeRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "refresh_token",
        ),
        (
            "revoke malformed session",
            Call::Revoke(RevokeRequest {
                session_id: "nope".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "revoke malformed token",
            Call::Revoke(RevokeRequest {
                refresh_token: "nope".into(),
                session_id: active.session_id.clone(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "refresh_token",
        ),
        (
            "idempotency key with a space",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                idempotency_key: "two words".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "idempotency_key",
        ),
        (
            "over-long idempotency key",
            Call::Start(StartAuthRequest {
                email: "a@example.com".into(),
                idempotency_key: long(256),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "idempotency_key",
        ),
        (
            "resend without a session",
            Call::Resend(proto::ResendCodeRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "resend malformed session",
            Call::Resend(proto::ResendCodeRequest {
                session_id: "' OR 1=1 --".into(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "list without a user",
            Call::List(proto::ListSessionsRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "user_id",
        ),
        (
            "list malformed user",
            Call::List(proto::ListSessionsRequest {
                user_id: "known@example.com".into(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "user_id",
        ),
        (
            "revoke session without an id",
            Call::RevokeSession(proto::RevokeSessionRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "session_id",
        ),
        (
            "revoke all without a user",
            Call::RevokeAll(proto::RevokeAllSessionsRequest {
                except_session_id: active.session_id.clone(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "user_id",
        ),
        (
            "revoke all malformed exception",
            Call::RevokeAll(proto::RevokeAllSessionsRequest {
                user_id: active.verify.user.clone().unwrap().id,
                except_session_id: "current".into(),
            }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "except_session_id",
        ),
        (
            "introspect nothing",
            Call::Introspect(proto::IntrospectTokenRequest::default()),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "token",
        ),
        (
            "introspect an over-long token",
            Call::Introspect(proto::IntrospectTokenRequest { token: long(9000) }),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "token",
        ),
    ];

    for (name, call, code, machine_code, expected_field) in cases {
        let err = call.send(&app).await;
        let oversized = name == "oversized message";
        // Over HTTP: the status that fits, and fields by their JSON names.
        let http_status = match code {
            _ if oversized => 413,
            Code::InvalidArgument | Code::FailedPrecondition => 400,
            other => panic!("no HTTP status decided for {other:?}"),
        };
        let expected_field = match case.transport {
            Transport::Grpc => expected_field.to_owned(),
            Transport::Http if oversized => String::new(),
            Transport::Http => crate::helpers::field_name(Transport::Http, expected_field),
        };
        err.assert_status(code, http_status);
        assert_eq!(err.code, machine_code, "{name}");
        assert_eq!(err.field, expected_field, "{name}");
        assert!(!err.message.is_empty(), "{name}: a human message");
    }

    assert_eq!(
        app.snapshot().await,
        before,
        "a refused call changed the database"
    );
    // The protected sessions still work.
    app.refresh(&active.verify.refresh_token).await.unwrap();
    let _ = proto::Method::Code;
}
