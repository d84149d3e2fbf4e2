//! The sessions API: listing a user's sessions, ending one or all of them,
//! and introspecting access tokens.

use std::{collections::HashSet, time::Duration};

use latchkey::{
    auth::tenants::TenantSettings,
    proto::{self, SessionState},
};

use crate::helpers::{ApiClient, Case, LoggedIn, TestApp, spawn_app};
use crate::matrix;

matrix!(
    a_users_sessions_are_listed_and_ended_within_the_callers_tenant,
    introspection_reports_genuine_tokens_and_whether_their_session_lasts,
);

/// A login from a given client.
async fn login_from(app: &TestApp, email: &str, ip: &str, user_agent: &str) -> LoggedIn {
    let before = app.smtp.mails_to(email).len();
    let started = app
        .api
        .start_auth(proto::StartAuthRequest {
            email: email.into(),
            client: Some(proto::ClientInfo {
                ip: ip.into(),
                user_agent: user_agent.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let code = app.smtp.wait_for_count(email, before + 1).await[before].code();
    let verify = app.verify(&started.session_id, &code).await.unwrap();
    LoggedIn {
        session_id: started.session_id,
        verify,
    }
}

async fn list(api: &ApiClient, user_id: &str) -> Vec<proto::Session> {
    api.list_sessions(proto::ListSessionsRequest {
        user_id: user_id.into(),
    })
    .await
    .unwrap()
    .sessions
}

fn state_of(sessions: &[proto::Session], id: &str) -> SessionState {
    sessions.iter().find(|s| s.id == id).unwrap().state()
}

async fn a_users_sessions_are_listed_and_ended_within_the_callers_tenant(case: Case) {
    let app = spawn_app(case).await;
    let s1 = app.login("pat@example.com").await;
    let s2 = app.login("pat@example.com").await;
    let s3 = login_from(&app, "pat@example.com", "203.0.113.9", "Firefox/140").await;
    let sam = app.login("sam@example.com").await;
    let pat = s1.verify.user.clone().unwrap().id;
    // A pending login of pat is not a session of the user yet.
    app.start_auth("pat@example.com").await.unwrap();
    let refreshed = app.refresh(&s3.verify.refresh_token).await.unwrap();

    let sessions = list(&app.api, &pat).await;
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([
            s1.session_id.as_str(),
            s2.session_id.as_str(),
            s3.session_id.as_str()
        ]),
    );
    assert!(
        sessions.windows(2).all(|w| {
            let at = |s: &proto::Session| s.created_at.map(|t| (t.seconds, t.nanos));
            at(&w[0]) >= at(&w[1])
        }),
        "newest first"
    );
    let third = sessions.iter().find(|s| s.id == s3.session_id).unwrap();
    assert_eq!(third.state(), SessionState::Active);
    let client = third.client.clone().unwrap();
    assert_eq!(
        (client.ip.as_str(), client.user_agent.as_str()),
        ("203.0.113.9", "Firefox/140")
    );
    assert!(
        third.created_at.is_some() && third.verified_at.is_some() && third.expires_at.is_some()
    );
    assert!(third.last_refreshed_at.is_some(), "it was refreshed");
    assert!(third.ended_at.is_none() && third.end_reason.is_empty());
    let first = sessions.iter().find(|s| s.id == s1.session_id).unwrap();
    assert!(first.last_refreshed_at.is_none());

    // Another tenant sees nothing and ends nothing.
    let (_, shop) = app.tenant("shop", TenantSettings::default()).await;
    assert!(list(&shop, &pat).await.is_empty());
    let none = shop
        .revoke_all_sessions(proto::RevokeAllSessionsRequest {
            user_id: pat.clone(),
            except_session_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(none.revoked, 0);
    shop.revoke_session(proto::RevokeSessionRequest {
        session_id: s1.session_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        state_of(&list(&app.api, &pat).await, &s1.session_id),
        SessionState::Active
    );

    // One session ends (idempotently)...
    for _ in 0..2 {
        app.api
            .revoke_session(proto::RevokeSessionRequest {
                session_id: s1.session_id.clone(),
            })
            .await
            .unwrap();
    }
    let sessions = list(&app.api, &pat).await;
    let ended = sessions.iter().find(|s| s.id == s1.session_id).unwrap();
    assert_eq!(ended.state(), SessionState::Ended);
    assert_eq!(ended.end_reason, "revoked");
    assert!(ended.ended_at.is_some());
    assert_eq!(
        app.refresh(&s1.verify.refresh_token)
            .await
            .unwrap_err()
            .code,
        "REFRESH_TOKEN_INVALID"
    );

    // ...then every other one but the current.
    let all_but = app
        .api
        .revoke_all_sessions(proto::RevokeAllSessionsRequest {
            user_id: pat.clone(),
            except_session_id: s3.session_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(all_but.revoked, 1, "only s2 was still active");
    let sessions = list(&app.api, &pat).await;
    assert_eq!(state_of(&sessions, &s2.session_id), SessionState::Ended);
    assert_eq!(state_of(&sessions, &s3.session_id), SessionState::Active);
    assert_eq!(
        app.refresh(&s2.verify.refresh_token)
            .await
            .unwrap_err()
            .code,
        "REFRESH_TOKEN_INVALID"
    );
    app.refresh(&refreshed.refresh_token)
        .await
        .expect("the kept session");
    app.refresh(&sam.verify.refresh_token)
        .await
        .expect("another user's session");

    // A session past its lifetime is listed as expired, and stays so: it
    // is not "revoked" again.
    app.clock
        .advance(app.settings.session_ttl + Duration::from_secs(1));
    assert_eq!(
        state_of(&list(&app.api, &pat).await, &s3.session_id),
        SessionState::Expired
    );
    let none = app
        .api
        .revoke_all_sessions(proto::RevokeAllSessionsRequest {
            user_id: pat.clone(),
            except_session_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(none.revoked, 0);
    assert_eq!(
        state_of(&list(&app.api, &pat).await, &s3.session_id),
        SessionState::Expired
    );

    // An unknown user simply has no sessions.
    assert!(
        list(&app.api, &uuid::Uuid::now_v7().to_string())
            .await
            .is_empty()
    );
}

async fn introspection_reports_genuine_tokens_and_whether_their_session_lasts(case: Case) {
    let app = spawn_app(case).await;
    let pat = app.login("pat@example.com").await;
    let introspect = |api: ApiClient, token: String| async move {
        api.introspect_token(proto::IntrospectTokenRequest { token })
            .await
            .unwrap()
    };

    let found = introspect(app.api.clone(), pat.verify.token.clone()).await;
    assert!(found.active && !found.session_ended);
    let claims = found.claims.unwrap();
    let user = pat.verify.user.clone().unwrap();
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.email, "pat@example.com");
    assert_eq!(claims.sid, pat.session_id);
    assert_eq!(claims.tid, "default");
    assert_eq!(claims.iss, app.settings.issuer);
    assert_eq!(claims.aud, app.settings.audience);
    let (iat, exp) = (claims.iat.unwrap().seconds, claims.exp.unwrap().seconds);
    assert_eq!(exp - iat, app.settings.access_token_ttl.as_secs() as i64);
    assert!(!claims.jti.is_empty());

    // Not genuine, or not this tenant's: inactive, nothing disclosed.
    let mut forged = pat.verify.token.clone();
    let payload_end = forged.rfind('.').unwrap();
    forged.replace_range(payload_end - 2..payload_end, "AA");
    for token in [
        forged,
        "not-a-jwt".to_owned(),
        format!("{}x", pat.verify.token),
    ] {
        let found = introspect(app.api.clone(), token.clone()).await;
        assert_eq!(found, proto::IntrospectTokenResponse::default(), "{token}");
    }
    let (_, shop) = app.tenant("shop", TenantSettings::default()).await;
    let found = introspect(shop, pat.verify.token.clone()).await;
    assert_eq!(found, proto::IntrospectTokenResponse::default());

    // A revoked session shows at once, though the token has not expired.
    let other = app.login("pat@example.com").await;
    app.revoke("", &other.session_id).await.unwrap();
    let found = introspect(app.api.clone(), other.verify.token.clone()).await;
    assert!(!found.active && found.session_ended);
    assert_eq!(found.claims.unwrap().sid, other.session_id);

    // An expired token of a live session: inactive, session not ended.
    app.clock
        .advance(app.settings.access_token_ttl + Duration::from_secs(1));
    let found = introspect(app.api.clone(), pat.verify.token.clone()).await;
    assert!(!found.active && !found.session_ended);
    assert!(found.claims.is_some());
    let fresh = app.refresh(&pat.verify.refresh_token).await.unwrap();
    assert!(introspect(app.api.clone(), fresh.token).await.active);
}
