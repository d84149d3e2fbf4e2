//! API keys and tenants: every caller authenticated, every app isolated.

use std::time::Duration;

use latchkey::{
    auth::{
        apikeys::Scope,
        tenants::{SignupPolicy, TenantSettings},
    },
    proto::{self, admin_service_client::AdminServiceClient},
};
use serde_json::Value;
use tonic::transport::Channel;

use crate::helpers::verify_with_jwks;
use crate::helpers::{ApiClient, Backend, Case, TestApp, Transport, spawn_app, spawn_replica};
use crate::{both_backends, matrix};

matrix!(
    every_bad_key_is_unauthenticated_on_every_rpc_and_changes_nothing,
    one_tenants_key_cannot_touch_another_tenants_users_or_sessions,
    a_login_only_tenant_answers_unknown_addresses_like_known_ones_without_mail,
);
both_backends!(a_key_revoked_on_one_process_is_refused_by_another_within_five_seconds);

/// Each AuthService call (but GetJwks) with `api`'s key.
async fn every_rpc(api: &ApiClient) -> Vec<(&'static str, crate::helpers::ApiError)> {
    let sid = uuid::Uuid::now_v7().to_string();
    let token = format!("lkr_{}", "A".repeat(43));
    let mut out = Vec::new();
    let start = api
        .start_auth(proto::StartAuthRequest {
            email: "someone@example.com".into(),
            ..Default::default()
        })
        .await;
    out.push(("StartAuth", start.map(|_| ()).unwrap_err()));
    let verify = api
        .verify(proto::VerifyRequest {
            session_id: sid.clone(),
            code: "123456".into(),
            ..Default::default()
        })
        .await;
    out.push(("Verify", verify.map(|_| ()).unwrap_err()));
    let refresh = api
        .refresh(proto::RefreshRequest {
            refresh_token: token.clone(),
        })
        .await;
    out.push(("Refresh", refresh.map(|_| ()).unwrap_err()));
    let revoke = api
        .revoke(proto::RevokeRequest {
            refresh_token: token,
            session_id: sid.clone(),
        })
        .await;
    out.push(("Revoke", revoke.map(|_| ()).unwrap_err()));
    let resend = api
        .resend_code(proto::ResendCodeRequest {
            session_id: sid.clone(),
        })
        .await;
    out.push(("ResendCode", resend.map(|_| ()).unwrap_err()));
    let list = api
        .list_sessions(proto::ListSessionsRequest {
            user_id: sid.clone(),
        })
        .await;
    out.push(("ListSessions", list.map(|_| ()).unwrap_err()));
    let revoke_one = api
        .revoke_session(proto::RevokeSessionRequest {
            session_id: sid.clone(),
        })
        .await;
    out.push(("RevokeSession", revoke_one.map(|_| ()).unwrap_err()));
    let revoke_all = api
        .revoke_all_sessions(proto::RevokeAllSessionsRequest {
            user_id: sid,
            except_session_id: String::new(),
        })
        .await;
    out.push(("RevokeAllSessions", revoke_all.map(|_| ()).unwrap_err()));
    let introspect = api
        .introspect_token(proto::IntrospectTokenRequest {
            token: "a.b.c".into(),
        })
        .await;
    out.push(("IntrospectToken", introspect.map(|_| ()).unwrap_err()));
    out
}

async fn every_bad_key_is_unauthenticated_on_every_rpc_and_changes_nothing(case: Case) {
    let app = spawn_app(case).await;
    let revoked = app
        .admin
        .create_api_key("default", "old", Scope::App, None)
        .await
        .unwrap();
    app.admin
        .revoke_api_key(&revoked.info.prefix)
        .await
        .unwrap();
    let now = app.clock.now_ms();
    let expiring = app
        .admin
        .create_api_key("default", "short-lived", Scope::App, Some(now + 60_000))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(61));
    // A well-formed key whose prefix exists, with the wrong secret.
    let good = app.key.clone();
    let wrong_secret = format!("{}{}", &good[..good.len() - 4], "AAAA");
    let unknown = latchkey::auth::apikeys::generate(Scope::App).text;
    let before = app.snapshot().await;

    let mut messages = Vec::new();
    for (what, key) in [
        ("no key", None),
        ("not a key", Some("hunter2")),
        ("unknown key", Some(unknown.as_str())),
        ("wrong secret", Some(wrong_secret.as_str())),
        ("revoked key", Some(revoked.key.as_str())),
        ("expired key", Some(expiring.key.as_str())),
    ] {
        for (rpc, err) in every_rpc(&app.api.with_key(key)).await {
            assert_eq!(err.code, "UNAUTHENTICATED", "{what} on {rpc}");
            err.assert_status(tonic::Code::Unauthenticated, 401);
            messages.push(err.message);
        }
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "one message for every bad key: {messages:?}"
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused call changed something"
    );

    // An admin key is a good key of the wrong scope.
    let admin = app
        .admin
        .create_api_key("default", "ops", Scope::Admin, None)
        .await
        .unwrap();
    for (rpc, err) in every_rpc(&app.api.with_key(Some(&admin.key))).await {
        assert_eq!(err.code, "PERMISSION_DENIED", "{rpc}");
        err.assert_status(tonic::Code::PermissionDenied, 403);
    }
    // GetJwks stays public.
    assert_eq!(app.api.with_key(None).jwks().await.keys.len(), 1);
}

async fn one_tenants_key_cannot_touch_another_tenants_users_or_sessions(case: Case) {
    let app = spawn_app(case).await;
    let (_, shop) = app
        .tenant(
            "shop",
            TenantSettings {
                audience: Some("shop-app".into()),
                issuer: Some("https://auth.shop.test".into()),
                ..Default::default()
            },
        )
        .await;

    // A logs in (the default tenant); B (shop) holds A's session id, code and tokens.
    let (sid, code) = app.start_and_read_code("pat@example.com").await;
    let as_b = shop
        .verify(proto::VerifyRequest {
            session_id: sid.clone(),
            code: code.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(as_b.code, "CODE_INVALID");
    let a = app
        .verify(&sid, &code)
        .await
        .expect("A's own key still works");
    let refresh_as_b = shop
        .refresh(proto::RefreshRequest {
            refresh_token: a.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh_as_b.code, "REFRESH_TOKEN_INVALID");
    // Revoking someone else's session "succeeds" (idempotent, no oracle) but does nothing.
    shop.revoke(proto::RevokeRequest {
        refresh_token: a.refresh_token.clone(),
        session_id: String::new(),
    })
    .await
    .unwrap();
    shop.revoke(proto::RevokeRequest {
        refresh_token: String::new(),
        session_id: sid.clone(),
    })
    .await
    .unwrap();
    let still = app
        .refresh(&a.refresh_token)
        .await
        .expect("A's session is untouched");

    // The same address in B is a different user, with B's token claims.
    let b_started = shop
        .start_auth(proto::StartAuthRequest {
            email: "pat@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mails = app.smtp.wait_for_count("pat@example.com", 2).await;
    let b = shop
        .verify(proto::VerifyRequest {
            session_id: b_started.session_id,
            code: mails[1].code(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(b.new_user);
    assert_ne!(b.user.as_ref().unwrap().id, a.user.as_ref().unwrap().id);
    let b_claims = decode_claims(&b.token);
    assert_eq!(b_claims["tid"], "shop");
    assert_eq!(b_claims["aud"], "shop-app");
    assert_eq!(b_claims["iss"], "https://auth.shop.test");
    let (_, a_claims) = verify_with_jwks(&app, &still.token).await;
    assert_eq!(a_claims.tid, "default");
    assert_eq!(a_claims.aud, "app.test");

    // Admin lookups are per tenant too.
    let a_user = a.user.unwrap();
    assert!(app.admin.find_user("shop", &a_user.id, "").await.is_err());
    assert_eq!(
        app.admin
            .find_user("default", &a_user.id, "")
            .await
            .unwrap()
            .id,
        a_user.id
    );
}

async fn a_login_only_tenant_answers_unknown_addresses_like_known_ones_without_mail(case: Case) {
    let app = spawn_app(case).await;
    let (key, _) = app
        .tenant(
            "closed",
            TenantSettings {
                signup_policy: Some(SignupPolicy::LoginOnly),
                ..Default::default()
            },
        )
        .await;
    // A member exists (created while the tenant still allowed sign-up).
    app.admin
        .update_tenant(
            "closed",
            None,
            &TenantSettings::default(),
            &["signup_policy".to_owned()],
        )
        .await
        .unwrap();
    let closed = app.api.with_key(Some(&key));
    let member = start_raw(&app, &key, "member@example.com").await;
    let code = app.smtp.wait_for("member@example.com").await.code();
    closed
        .verify(proto::VerifyRequest {
            session_id: member["sessionId"].as_str().unwrap().into(),
            code,
            ..Default::default()
        })
        .await
        .unwrap();
    app.admin
        .update_tenant(
            "closed",
            None,
            &TenantSettings {
                signup_policy: Some(SignupPolicy::LoginOnly),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();

    // Known and unknown: the same status and body, but for the random id and the time.
    let known = start_raw(&app, &key, "member@example.com").await;
    let unknown = start_raw(&app, &key, "stranger@example.com").await;
    assert_eq!(masked(&known), masked(&unknown));
    assert_eq!(
        known.to_string().len(),
        unknown.to_string().len(),
        "same size"
    );

    // Only the member gets mail; a guess at the stranger's session cannot
    // create an account.
    app.smtp.wait_for_count("member@example.com", 2).await;
    app.wait_outbox_drained().await;
    assert!(
        app.smtp
            .mails()
            .iter()
            .all(|m| !m.to.contains(&"stranger@example.com".to_owned()))
    );
    let guess = closed
        .verify(proto::VerifyRequest {
            session_id: unknown["sessionId"].as_str().unwrap().into(),
            code: "123456".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(guess.code, "CODE_INVALID");
    assert!(
        app.admin
            .find_user("closed", "", "stranger@example.com")
            .await
            .is_err()
    );

    // With notices on, the stranger is told there is no account (and gets no code).
    app.admin
        .update_tenant(
            "closed",
            None,
            &TenantSettings {
                notify_unknown_address: Some(true),
                app_name: Some("Closed Club".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    start_raw(&app, &key, "stranger@example.com").await;
    let notice = app.smtp.wait_for("stranger@example.com").await;
    assert_eq!(
        notice.header("Subject").unwrap(),
        "Sign-in attempt at Closed Club"
    );
    assert!(!notice.data.contains("sign-in code"));
}

/// StartAuth over the app's transport, as raw JSON (for comparing bodies).
async fn start_raw(app: &TestApp, key: &str, email: &str) -> Value {
    match app.api.transport() {
        Transport::Http => {
            let response = app
                .http
                .post(format!("{}/auth/start", app.http_base))
                .bearer_auth(key)
                .json(&serde_json::json!({ "email": email }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json().await.unwrap()
        }
        Transport::Grpc => {
            let r = app
                .api
                .with_key(Some(key))
                .start_auth(proto::StartAuthRequest {
                    email: email.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            serde_json::to_value(&r).unwrap()
        }
    }
}

/// A StartAuth answer with its random parts replaced by their shape.
fn masked(v: &Value) -> Value {
    let mut v = v.clone();
    for field in ["sessionId", "expiresAt"] {
        let len = v[field].as_str().unwrap().len();
        v[field] = format!("<{len} chars>").into();
    }
    v
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn a_key_revoked_on_one_process_is_refused_by_another_within_five_seconds(backend: Backend) {
    let app = spawn_app(backend).await;
    let replica = spawn_replica(&app, |_| {}).await;
    let created = app
        .admin
        .create_api_key("default", "to revoke", Scope::App, None)
        .await
        .unwrap();
    let on_replica = replica.api.with_key(Some(&created.key));
    // The replica learns of the new key (within a second)...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Err(e) = on_replica
        .start_auth(proto::StartAuthRequest {
            email: "r@example.com".into(),
            ..Default::default()
        })
        .await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new key never accepted: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // ...and of its revocation on the other process.
    app.admin
        .revoke_api_key(&created.info.prefix)
        .await
        .unwrap();
    let revoked_at = tokio::time::Instant::now();
    loop {
        let result = on_replica
            .start_auth(proto::StartAuthRequest {
                email: "r@example.com".into(),
                ..Default::default()
            })
            .await;
        if let Err(e) = result {
            assert_eq!(e.code, "UNAUTHENTICATED");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "still accepted 5 s after revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn admin_client(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap()
}

pub(crate) fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::test]
async fn the_admin_service_manages_tenants_keys_and_users_and_refuses_app_keys() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin_key = app
        .admin
        .create_api_key("default", "automation", Scope::Admin, None)
        .await
        .unwrap()
        .key;
    let mut admin = admin_client(&app).await;

    // App keys and no keys are refused.
    let as_app = admin
        .list_tenants(with_key(proto::ListTenantsRequest {}, &app.key))
        .await
        .unwrap_err();
    assert_eq!(as_app.code(), tonic::Code::PermissionDenied);
    let anonymous = admin
        .list_tenants(proto::ListTenantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    // Tenants.
    let created = admin
        .create_tenant(with_key(
            proto::CreateTenantRequest {
                tenant_id: "blog".into(),
                name: "Blog".into(),
                settings: Some(proto::TenantSettings {
                    code_length: Some(8),
                    ..Default::default()
                }),
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.settings.unwrap().code_length, Some(8));
    let again = admin
        .create_tenant(with_key(
            proto::CreateTenantRequest {
                tenant_id: "blog".into(),
                name: "Blog 2".into(),
                settings: None,
            },
            &admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    let bad = admin
        .update_tenant(with_key(
            proto::UpdateTenantRequest {
                tenant_id: "blog".into(),
                settings: Some(proto::TenantSettings {
                    mail_from: Some("not a mailbox".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let updated = admin
        .update_tenant(with_key(
            proto::UpdateTenantRequest {
                tenant_id: "blog".into(),
                name: Some("The Blog".into()),
                clear_settings: vec!["code_length".into()],
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "The Blog");
    assert_eq!(updated.settings.unwrap().code_length, None);
    let listed = admin
        .list_tenants(with_key(proto::ListTenantsRequest {}, &admin_key))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["blog", "default"]);

    // Keys: made once, listed without secrets, revoked.
    let made = admin
        .create_api_key(with_key(
            proto::CreateApiKeyRequest {
                tenant_id: "blog".into(),
                name: "blog backend".into(),
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(made.key.starts_with("lk_app_"));
    let blog = app.api.with_key(Some(&made.key));
    blog.start_auth(proto::StartAuthRequest {
        email: "writer@example.com".into(),
        ..Default::default()
    })
    .await
    .expect("the new key works at once");
    let keys = admin
        .list_api_keys(with_key(
            proto::ListApiKeysRequest {
                tenant_id: "blog".into(),
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].prefix, made.api_key.unwrap().prefix);
    assert!(!format!("{keys:?}").contains(&made.key[20..]));
    admin
        .revoke_api_key(with_key(
            proto::RevokeApiKeyRequest {
                prefix: keys[0].prefix.clone(),
            },
            &admin_key,
        ))
        .await
        .unwrap();
    let refused = blog
        .start_auth(proto::StartAuthRequest {
            email: "writer@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code, "UNAUTHENTICATED");

    // Users: looked up per tenant; deleting one ends their sessions.
    let login = app.login("gone@example.com").await;
    let user_id = login.verify.user.unwrap().id;
    let found = admin
        .get_user(with_key(
            proto::GetUserRequest {
                tenant_id: "default".into(),
                email: "gone@EXAMPLE.com".into(),
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.id, user_id);
    admin
        .delete_user(with_key(
            proto::DeleteUserRequest {
                tenant_id: "default".into(),
                user_id: user_id.clone(),
            },
            &admin_key,
        ))
        .await
        .unwrap();
    assert_eq!(
        app.refresh(&login.verify.refresh_token)
            .await
            .unwrap_err()
            .code,
        "REFRESH_TOKEN_INVALID"
    );
    let missing = admin
        .get_user(with_key(
            proto::GetUserRequest {
                tenant_id: "default".into(),
                user_id,
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn key_use_is_recorded_in_batches_and_shown_in_listings() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let before = app.admin.list_api_keys(Some("default")).await.unwrap();
    assert_eq!(before[0].last_used_at, None);
    app.start_auth("used@example.com").await.unwrap();
    // Not written per request...
    let still = app.admin.list_api_keys(Some("default")).await.unwrap();
    assert_eq!(still[0].last_used_at, None);
    // ...but in a batch (at the latest when the server stops).
    app.begin_shutdown();
    app.stopped().await.unwrap();
    // (The server closed its pool; read through a fresh store.)
    let store = latchkey::store::Store::connect(app.database_url(), &Default::default())
        .await
        .unwrap();
    let rows = store.all_api_keys().await.unwrap();
    assert!(rows[0].last_used_at.is_some());
}

/// Zero-setup development: the first `latchkey` start without SMTP makes an
/// app key, shows it once, and keeps it in the data directory.
#[tokio::test]
async fn the_first_unconfigured_start_makes_a_development_key() {
    let dir = crate::helpers::TempDir::new();
    let start = || async {
        let served = crate::helpers::Served::start(&dir.path, &[]).await;
        let output = served.early_log.join("\n");
        (served, output)
    };

    let (first, output) = start().await;
    let http = first.http.clone();
    assert!(output.contains("created a development API key"), "{output}");
    let file = dir.path.join("dev-api-key");
    let key = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    // The key is in a private file, never in the log.
    assert!(!output.contains(&key[8..]), "{output}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let response = reqwest::Client::new()
        .post(format!("http://{http}/auth/start"))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "email": "dev@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    first.kill().await;

    let (second, output) = start().await;
    assert!(
        !output.contains("created a development API key"),
        "made once"
    );
    second.kill().await;
}

#[tokio::test]
async fn the_cli_manages_tenants_and_keys() {
    let app = spawn_app(Backend::Sqlite).await;
    let cli = |args: &'static [&'static str]| {
        let app = &app;
        async move {
            let out = crate::helpers::cli(app, args).await;
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = cli(&[
        "tenant",
        "create",
        "--id",
        "news",
        "--name",
        "News",
        "--code-length",
        "7",
        "--signup-policy",
        "login-only",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("created tenant news"));
    let (ok, out, _) = cli(&["tenant", "show", "news"]).await;
    assert!(
        ok && out.contains("code_length=7") && out.contains("LoginOnly"),
        "{out}"
    );
    let (ok, _, err) = cli(&["tenant", "update", "news", "--code-length", "4"]).await;
    assert!(!ok && err.contains("settings.code_length"), "{err}");
    let (ok, key, err) = cli(&["apikey", "create", "--tenant", "news", "--name", "web"]).await;
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("lk_app_"));
    // The running server accepts it within a second.
    let news = app.api.with_key(Some(&key));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while news
        .start_auth(proto::StartAuthRequest {
            email: "reader@example.com".into(),
            ..Default::default()
        })
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, list, _) = cli(&["apikey", "list", "--tenant", "news"]).await;
    assert!(
        ok && list.contains("web") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&key[20..]), "secrets are never listed");
    let prefix = key.split('_').nth(2).unwrap().to_owned();
    let out = crate::helpers::cli(&app, &["apikey", "revoke", &prefix]).await;
    assert!(out.status.success());
    let (_, list, _) = cli(&["apikey", "list", "--tenant", "news"]).await;
    assert!(list.contains("revoked"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_settings_both_take_effect() {
    let app = spawn_app(Backend::Postgres).await;
    app.admin
        .create_tenant("busy", "Busy", TenantSettings::default())
        .await
        .unwrap();
    let updates: Vec<_> = (0..6u8)
        .map(|i| {
            let admin = app.admin.clone();
            tokio::spawn(async move {
                let set = match i % 3 {
                    0 => TenantSettings {
                        code_length: Some(8),
                        ..Default::default()
                    },
                    1 => TenantSettings {
                        app_name: Some("Busy App".into()),
                        ..Default::default()
                    },
                    _ => TenantSettings {
                        signup_policy: Some(SignupPolicy::LoginOnly),
                        ..Default::default()
                    },
                };
                admin.update_tenant("busy", None, &set, &[]).await.unwrap();
            })
        })
        .collect();
    for u in updates {
        u.await.unwrap();
    }
    let t = app.admin.tenant("busy").unwrap();
    assert_eq!(t.settings.code_length, Some(8));
    assert_eq!(t.settings.app_name.as_deref(), Some("Busy App"));
    assert_eq!(t.settings.signup_policy, Some(SignupPolicy::LoginOnly));
}
