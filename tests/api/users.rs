//! Users and custom claims: looking users up and listing them, their
//! `app_metadata` and the tenant's static claims in access tokens (checked
//! against the JWKS), and disabling: every login ends at once, Verify and
//! Refresh refuse, StartAuth answers as for anyone and sends nothing.

use std::time::Duration;

use latchkey::{
    auth::{apikeys::Scope, tenants::TenantSettings},
    proto::{self, admin_service_client::AdminServiceClient},
};
use serde_json::json;
use tonic::transport::Channel;

use crate::helpers::{
    ApiClient, ApiError, Backend, Case, TestApp, cli, spawn_app, spawn_app_with, verify_with_jwks,
};
use crate::tenants::{admin_client, with_key};
use crate::{both_backends, matrix};

matrix!(
    disabling_a_user_ends_every_login_and_start_auth_then_sends_nothing,
    enabling_restores_login_but_not_the_sessions_disabling_ended,
    app_metadata_and_static_claims_reach_tokens_and_introspection,
    bad_app_metadata_is_refused_and_changes_nothing,
    an_app_key_sees_only_its_own_tenant_s_users,
);

both_backends!(
    list_users_pages_in_a_stable_order_with_filters,
    the_user_commands_act_on_the_database,
);

/// The AdminService and an admin key.
struct Admin {
    client: AdminServiceClient<Channel>,
    key: String,
}

impl Admin {
    async fn of(app: &TestApp) -> Self {
        let key = app
            .admin
            .create_api_key("default", "admin", Scope::Admin, None)
            .await
            .unwrap()
            .key;
        Self {
            client: admin_client(app).await,
            key,
        }
    }

    async fn disable(&self, user_id: &str) -> proto::DisableUserResponse {
        self.client
            .clone()
            .disable_user(with_key(
                proto::DisableUserRequest {
                    tenant_id: "default".into(),
                    user_id: user_id.into(),
                },
                &self.key,
            ))
            .await
            .expect("DisableUser")
            .into_inner()
    }

    async fn enable(&self, user_id: &str) -> proto::User {
        self.client
            .clone()
            .enable_user(with_key(
                proto::EnableUserRequest {
                    tenant_id: "default".into(),
                    user_id: user_id.into(),
                },
                &self.key,
            ))
            .await
            .expect("EnableUser")
            .into_inner()
            .user
            .unwrap()
    }

    async fn list(
        &self,
        req: proto::ListUsersRequest,
    ) -> Result<proto::ListUsersResponse, tonic::Status> {
        self.client
            .clone()
            .list_users(with_key(req, &self.key))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// GetUser by id, and UpdateUser, through `api`.
async fn get_user(api: &ApiClient, user_id: &str) -> Result<proto::User, ApiError> {
    api.get_user(proto::AuthServiceGetUserRequest {
        user_id: user_id.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.user.unwrap())
}

async fn update_user(
    api: &ApiClient,
    user_id: &str,
    metadata: &str,
) -> Result<proto::User, ApiError> {
    api.update_user(proto::AuthServiceUpdateUserRequest {
        user_id: user_id.into(),
        app_metadata: metadata.into(),
    })
    .await
    .map(|r| r.user.unwrap())
}

/// Every email the sink received for `to`.
fn mails_to(app: &TestApp, to: &str) -> usize {
    app.smtp.mails_to(to).len()
}

/// How many outbox rows to `to` there are of each kind: (sign-in, suppressed).
async fn outbox_kinds(app: &TestApp, to: &str) -> (usize, usize) {
    let mut rows = Vec::new();
    for state in ["queued", "sent", "dead"] {
        rows.extend(app.store.outbox_list(state, 1000).await.unwrap());
    }
    let to_them = rows.iter().filter(|r| r.recipient == to);
    let count = |kind: &str| to_them.clone().filter(|r| r.kind == kind).count();
    (count("sign_in"), count("suppressed"))
}

async fn disabling_a_user_ends_every_login_and_start_auth_then_sends_nothing(case: Case) {
    // The real per-address limit, so that "the same limits" can be seen.
    let app = spawn_app_with(case, |s| s.rate_limit_email = 5).await;
    let admin = Admin::of(&app).await;
    let ada = "ada@example.com";
    let bob = "bob@example.com";
    // Both have two sessions and a login whose code is in their mailbox:
    // three sign-in emails each.
    let mut sessions = Vec::new();
    for who in [ada, bob] {
        sessions.push((app.login(who).await, app.login(who).await));
    }
    let (ada_pending, ada_code) = app.start_and_read_code(ada).await;
    let (bob_pending, _) = app.start_and_read_code(bob).await;
    let (first, second) = &sessions[0];
    let user = first.verify.user.clone().unwrap();

    let disabled = admin.disable(&user.id).await;
    assert_eq!(disabled.ended_logins, 3, "two sessions and a pending login");
    let shown = disabled.user.unwrap();
    assert!(shown.disabled_at.is_some());
    assert_eq!(shown.id, user.id);

    // Refresh and Verify refuse with the stable reason.
    for login in [first, second] {
        let refused = app.refresh(&login.verify.refresh_token).await.unwrap_err();
        assert_eq!(refused.code, "USER_DISABLED");
        refused.assert_status(tonic::Code::PermissionDenied, 403);
    }
    let refused = app.verify(&ada_pending, &ada_code).await.unwrap_err();
    assert_eq!(refused.code, "USER_DISABLED");
    // Their sessions really ended, with the reason recorded.
    let listed = app
        .api
        .list_sessions(proto::ListSessionsRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap()
        .sessions;
    assert_eq!(listed.len(), 2);
    for s in &listed {
        assert_eq!(s.state, proto::SessionState::Ended as i32);
        assert_eq!(s.end_reason, "user_disabled");
    }
    let introspected = app
        .api
        .introspect_token(proto::IntrospectTokenRequest {
            token: first.verify.token.clone(),
        })
        .await
        .unwrap();
    assert!(!introspected.active);
    assert!(introspected.session_ended);
    // A login whose email is not out yet (the relay refuses for now) ends
    // too, and its email never goes out.
    let mails_before = mails_to(&app, ada);
    app.smtp.set_unavailable(true);
    let enable_then_start = async {
        admin.enable(&user.id).await;
        app.start_auth(ada).await.unwrap()
    };
    let late = enable_then_start.await;
    // (Bob starts one too, so both have used as much of their limit.)
    app.start_auth(bob).await.unwrap();
    admin.disable(&user.id).await;
    app.smtp.set_unavailable(false);
    app.wait_outbox_drained().await;
    assert_eq!(
        mails_to(&app, ada),
        mails_before,
        "the queued email was never sent"
    );
    let refused = app.verify(&late.session_id, "000000").await.unwrap_err();
    assert_eq!(refused.code, "USER_DISABLED");
    // Bob was not touched.
    app.refresh(&sessions[1].0.verify.refresh_token)
        .await
        .expect("another user's session lives on");

    // StartAuth: the same answers as for Bob, up to the same limit (each
    // has four sends counted; the limit is five), and nothing sent.
    let mut answers = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let a = app.start_auth(ada).await.map(|r| r.code_length);
        let b = app.start_auth(bob).await.map(|r| r.code_length);
        answers.0.push(a.map_err(|e| e.code));
        answers.1.push(b.map_err(|e| e.code));
    }
    let rate_limited = Err("RATE_LIMITED".to_owned());
    assert_eq!(
        answers.0,
        [Ok(6), rate_limited.clone(), rate_limited.clone()]
    );
    assert_eq!(answers.1, answers.0, "a disabled address answers like any");
    app.smtp.wait_for_count(bob, 5).await;
    app.wait_outbox_drained().await;
    assert_eq!(mails_to(&app, ada), 3, "nothing sent after disabling");
    assert_eq!(outbox_kinds(&app, ada).await, (3, 2));
    assert_eq!(outbox_kinds(&app, bob).await, (5, 0));
    // (Bob's pending login is untouched too.)
    assert!(!bob_pending.is_empty());
}

async fn enabling_restores_login_but_not_the_sessions_disabling_ended(case: Case) {
    let app = spawn_app(case).await;
    let admin = Admin::of(&app).await;
    let before = app.login("cy@example.com").await;
    let id = before.verify.user.clone().unwrap().id;
    admin.disable(&id).await;
    // Disabling twice is no error and keeps the first time.
    let again = admin.disable(&id).await;
    assert_eq!(again.ended_logins, 0);
    let enabled = admin.enable(&id).await;
    assert!(enabled.disabled_at.is_none());

    let old = app.refresh(&before.verify.refresh_token).await.unwrap_err();
    assert_eq!(
        old.code, "REFRESH_TOKEN_INVALID",
        "ended sessions stay ended"
    );
    let after = app.login("cy@example.com").await;
    let user = after.verify.user.unwrap();
    assert_eq!(user.id, id, "the same user logs in again");
    assert!(!after.verify.new_user);
    app.refresh(&after.verify.refresh_token)
        .await
        .expect("the new session refreshes");
}

async fn app_metadata_and_static_claims_reach_tokens_and_introspection(case: Case) {
    let app = spawn_app(case).await;
    app.admin
        .update_tenant(
            "default",
            None,
            &TenantSettings {
                static_claims: Some(r#"{"org":"acme","plan":"free"}"#.into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    let login = app.login("dee@example.com").await;
    let user = login.verify.user.clone().unwrap();
    assert_eq!(user.app_metadata, "{}");
    let (_, claims) = verify_with_jwks(&app, &login.verify.token).await;
    assert_eq!(
        claims.app_metadata,
        Some(json!({"org":"acme","plan":"free"}))
    );

    // The user's own data: merged in, the user's value wins; keys named like
    // our claims stay inside the namespaced claim.
    let metadata =
        r#"{ "plan": "pro", "sub": "someone-else", "iss": "evil", "n": 12345678901234567 }"#;
    let updated = update_user(&app.api, &user.id, metadata).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&updated.app_metadata).unwrap();
    assert_eq!(
        stored,
        serde_json::from_str::<serde_json::Value>(metadata).unwrap()
    );
    assert!(updated.updated_at.unwrap().seconds >= user.created_at.unwrap().seconds);

    let refreshed = app.refresh(&login.verify.refresh_token).await.unwrap();
    let (_, claims) = verify_with_jwks(&app, &refreshed.token).await;
    assert_eq!(claims.sub, user.id, "sub is ours");
    assert_eq!(claims.iss, app.settings.issuer, "iss is ours");
    assert_eq!(
        claims.app_metadata,
        Some(
            json!({"org":"acme","plan":"pro","sub":"someone-else","iss":"evil","n":12345678901234567_u64})
        )
    );
    // A new login carries it too, and GetUser shows it.
    let next = app.login("dee@example.com").await;
    let (_, again) = verify_with_jwks(&app, &next.verify.token).await;
    assert_eq!(again.app_metadata, claims.app_metadata);
    assert_eq!(next.verify.user.unwrap().app_metadata, updated.app_metadata);
    let found = app
        .api
        .get_user(proto::AuthServiceGetUserRequest {
            email: "DEE@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(found, updated);

    let introspected = app
        .api
        .introspect_token(proto::IntrospectTokenRequest {
            token: refreshed.token.clone(),
        })
        .await
        .unwrap();
    assert!(introspected.active);
    let claim: serde_json::Value =
        serde_json::from_str(&introspected.claims.unwrap().app_metadata).unwrap();
    assert_eq!(Some(claim), claims.app_metadata);

    // Cleared on both sides: the token has no such claim.
    update_user(&app.api, &user.id, "{}").await.unwrap();
    app.admin
        .update_tenant(
            "default",
            None,
            &TenantSettings::default(),
            &["static_claims".into()],
        )
        .await
        .unwrap();
    let bare = app.refresh(&refreshed.refresh_token).await.unwrap();
    let (_, claims) = verify_with_jwks(&app, &bare.token).await;
    assert_eq!(claims.app_metadata, None);
    let raw = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&bare.token)
        .unwrap()
        .claims;
    assert!(raw.get("app_metadata").is_none(), "{raw}");
}

async fn bad_app_metadata_is_refused_and_changes_nothing(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("eve@example.com").await;
    let id = login.verify.user.unwrap().id;
    update_user(&app.api, &id, r#"{"keep":true}"#)
        .await
        .unwrap();
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(2048));
    for bad in ["[1,2]", "\"text\"", "{", "", "null", big.as_str()] {
        let e = update_user(&app.api, &id, bad).await.unwrap_err();
        assert_eq!(e.code, "INVALID_ARGUMENT", "{bad:?}");
        assert_eq!(
            e.field,
            crate::helpers::field_name(app.api.transport(), "app_metadata"),
            "{bad:?}"
        );
    }
    let unknown = update_user(&app.api, "019ab5a3-0000-7000-8000-000000000000", "{}")
        .await
        .unwrap_err();
    assert_eq!(unknown.code, "NOT_FOUND");
    let user = get_user(&app.api, &id).await.unwrap();
    assert_eq!(user.app_metadata, r#"{"keep":true}"#);

    // A tenant's static claims follow the same rule.
    let e = app
        .admin
        .update_tenant(
            "default",
            None,
            &TenantSettings {
                static_claims: Some("[]".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("settings.static_claims"));
    assert!(
        app.admin
            .tenant("default")
            .unwrap()
            .settings
            .static_claims
            .is_none()
    );
}

async fn an_app_key_sees_only_its_own_tenant_s_users(case: Case) {
    let app = spawn_app(case).await;
    let login = app.login("fay@example.com").await;
    let id = login.verify.user.unwrap().id;
    let (_, other): (String, ApiClient) = app.tenant("other", TenantSettings::default()).await;
    let by_id = other
        .get_user(proto::AuthServiceGetUserRequest {
            user_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let by_email = other
        .get_user(proto::AuthServiceGetUserRequest {
            email: "fay@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let missing = app
        .api
        .get_user(proto::AuthServiceGetUserRequest {
            user_id: "019ab5a3-0000-7000-8000-000000000000".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    for e in [&by_id, &by_email, &missing] {
        assert_eq!(e.code, "NOT_FOUND");
        e.assert_status(tonic::Code::NotFound, 404);
        assert_eq!(e.message, missing.message, "one answer for both");
    }
    let e = update_user(&other, &id, r#"{"taken":1}"#)
        .await
        .unwrap_err();
    assert_eq!(e.code, "NOT_FOUND");
    let mine = get_user(&app.api, &id).await.unwrap();
    assert_eq!(mine.app_metadata, "{}", "unchanged by the other tenant");
    let none = app
        .api
        .get_user(proto::AuthServiceGetUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code, "INVALID_ARGUMENT");
}

async fn list_users_pages_in_a_stable_order_with_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = Admin::of(&app).await;
    // Seven users, the last four a minute apart. (Ties of one millisecond,
    // ordered by id, are the store suite's.)
    let mut made = Vec::new();
    for (i, who) in ["m1", "m2", "m3", "a1", "a2", "b1", "b2"]
        .iter()
        .enumerate()
    {
        if i >= 3 {
            app.clock.advance(Duration::from_secs(60));
        }
        let login = app.login(&format!("{who}@example.com")).await;
        let user = login.verify.user.unwrap();
        let at = user.created_at.unwrap();
        made.push((
            at.seconds * 1000 + i64::from(at.nanos) / 1_000_000,
            user.id,
            at,
        ));
    }
    made.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let expected: Vec<String> = made.iter().map(|(_, id, _)| id.clone()).collect();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list(proto::ListUsersRequest {
                tenant_id: "default".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // A user added while paging comes after, never in between.
        if pages == 1 {
            app.clock.advance(Duration::from_secs(60));
            app.login("late@example.com").await;
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(&seen[..7], &expected[..]);
    assert_eq!(seen.len(), 8, "the late user is on the last page");

    // Filters: prefix (canonical form), and a creation-time range.
    let by_prefix = admin
        .list(proto::ListUsersRequest {
            tenant_id: "default".into(),
            email_prefix: " A".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let emails: Vec<&str> = by_prefix.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["a1@example.com", "a2@example.com"]);
    assert!(by_prefix.next_page_token.is_empty());
    let a1_at = made[3].2;
    let b1_at = made[5].2;
    let in_range = admin
        .list(proto::ListUsersRequest {
            tenant_id: "default".into(),
            created_after: Some(a1_at),
            created_before: Some(b1_at),
            ..Default::default()
        })
        .await
        .unwrap();
    let emails: Vec<&str> = in_range.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["a1@example.com", "a2@example.com"]);

    // Bad input is refused, naming the field.
    for (req, field) in [
        (
            proto::ListUsersRequest {
                tenant_id: "default".into(),
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            proto::ListUsersRequest {
                tenant_id: "default".into(),
                created_after: Some(b1_at),
                created_before: Some(a1_at),
                ..Default::default()
            },
            "created_before",
        ),
    ] {
        let e = admin.list(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{e:?}");
    }
    let e = admin
        .list(proto::ListUsersRequest {
            tenant_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // A page never holds more than 500.
    let all = admin
        .list(proto::ListUsersRequest {
            tenant_id: "default".into(),
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.users.len(), 8);
}

async fn the_user_commands_act_on_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.login("gil@example.com").await;
    let id = login.verify.user.unwrap().id;
    app.login("hal@example.com").await;

    let run = |args: &'static [&'static str]| {
        let app = &app;
        async move {
            let out = cli(app, args).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "latchkey {args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let listed = run(&["user", "list", "--limit", "1"]).await;
    assert!(listed.contains("gil@example.com"), "{listed}");
    assert!(!listed.contains("hal@example.com"), "{listed}");
    let token = listed
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token "))
        .expect("a next page")
        .to_owned();
    let out = cli(
        &app,
        &["user", "list", "--limit", "1", "--page-token", &token],
    )
    .await;
    let second = String::from_utf8_lossy(&out.stdout);
    assert!(
        second.contains("hal@example.com") && second.contains("last page"),
        "{second}"
    );

    let shown = run(&["user", "show", "GIL@example.com"]).await;
    assert!(
        shown.contains(&id) && shown.contains("disabled:     no"),
        "{shown}"
    );

    let disabled = run(&["user", "disable", "gil@example.com"]).await;
    assert!(disabled.contains("1 login(s) ended"), "{disabled}");
    let refused = app.refresh(&login.verify.refresh_token).await.unwrap_err();
    assert_eq!(refused.code, "USER_DISABLED");
    let state = app.admin.find_user("default", &id, "").await.unwrap();
    assert!(state.disabled_at.is_some());

    run(&["user", "enable", "gil@example.com"]).await;
    assert!(
        app.admin
            .find_user("default", &id, "")
            .await
            .unwrap()
            .disabled_at
            .is_none()
    );
    app.login("gil@example.com").await;

    run(&["user", "delete", "gil@example.com"]).await;
    let gone = app.admin.find_user("default", &id, "").await.unwrap_err();
    assert_eq!(gone.code().as_str(), "NOT_FOUND");
    let missing = cli(&app, &["user", "show", "gil@example.com"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("user not found"));
}

matrix!(a_change_of_address_keeps_the_user_and_tells_the_old_address);

async fn a_change_of_address_keeps_the_user_and_tells_the_old_address(case: Case) {
    let app = spawn_app(case).await;
    let old = "ivy@example.com";
    let new = "ivy.new@example.com";
    let login = app.login(old).await;
    let user = login.verify.user.clone().unwrap();
    app.login("taken@example.com").await;
    let change = |user_id: &str, email: &str| {
        app.api.start_email_change(proto::StartEmailChangeRequest {
            user_id: user_id.into(),
            new_email: email.into(),
            method: proto::Method::Code as i32,
            ..Default::default()
        })
    };

    // Refused up front, nothing sent: another user's address, the same
    // address, a bad one, someone else's tenant.
    let taken = change(&user.id, "TAKEN@example.com").await.unwrap_err();
    assert_eq!(taken.code, "ALREADY_EXISTS");
    taken.assert_status(tonic::Code::AlreadyExists, 409);
    let same = change(&user.id, "Ivy@Example.com").await.unwrap_err();
    assert_eq!(same.code, "INVALID_ARGUMENT");
    let bad = change(&user.id, "not an address").await.unwrap_err();
    assert_eq!(
        bad.field,
        crate::helpers::field_name(app.api.transport(), "new_email")
    );
    let (_, other) = app.tenant("other", TenantSettings::default()).await;
    let foreign = other
        .start_email_change(proto::StartEmailChangeRequest {
            user_id: user.id.clone(),
            new_email: new.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code, "NOT_FOUND");

    // The proof goes to the new address.
    let started = change(&user.id, " Ivy.New@example.com ").await.unwrap();
    let code = app.smtp.wait_for(new).await.code();
    let verified = app.verify(&started.session_id, &code).await.unwrap();
    let moved = verified.user.clone().unwrap();
    assert_eq!(moved.id, user.id, "the same user");
    assert_eq!(moved.email, new);
    assert!(!verified.new_user);
    let (_, claims) = verify_with_jwks(&app, &verified.token).await;
    assert_eq!(
        (claims.sub.as_str(), claims.email.as_str()),
        (user.id.as_str(), new)
    );

    // The old address is told, with the new one masked.
    // (Its first email was the sign-in code.)
    let notice = app.smtp.wait_for_count(old, 2).await.remove(1);
    let subject = notice.header("Subject").unwrap();
    assert!(subject.contains("sign-in address was changed"), "{subject}");
    let text = notice.part("text/plain");
    assert!(
        text.contains("i***@example.com") && !text.contains(new),
        "{text}"
    );
    app.wait_outbox_drained().await;

    // Tokens refreshed from the old session carry the new address too.
    let refreshed = app.refresh(&login.verify.refresh_token).await.unwrap();
    let (_, claims) = verify_with_jwks(&app, &refreshed.token).await;
    assert_eq!(claims.email, new);
    let by_new = get_user_by_email(&app.api, new).await.unwrap();
    assert_eq!(by_new.id, user.id);
    let by_old = get_user_by_email(&app.api, old).await.unwrap_err();
    assert_eq!(by_old.code, "NOT_FOUND");
    // The proof was used once.
    let again = app.verify(&started.session_id, &code).await.unwrap_err();
    assert_eq!(again.code, "CODE_INVALID");

    // If another user takes the address before the proof comes back, the
    // change is refused and nothing moves.
    let started = change(&user.id, "race@example.com").await.unwrap();
    let code = app.smtp.wait_for("race@example.com").await.code();
    app.login("race@example.com").await;
    let lost = app.verify(&started.session_id, &code).await.unwrap_err();
    assert_eq!(lost.code, "ALREADY_EXISTS");
    let still = get_user(&app.api, &user.id).await.unwrap();
    assert_eq!(still.email, new);
}

async fn get_user_by_email(api: &ApiClient, email: &str) -> Result<proto::User, ApiError> {
    api.get_user(proto::AuthServiceGetUserRequest {
        email: email.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.user.unwrap())
}
