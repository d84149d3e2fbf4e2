use std::time::Duration;

use latchkey::{
    auth::keys::SigningAlg,
    auth::{DEFAULT_TENANT, keys},
    server::load_kek,
};

use crate::both_backends;
use crate::helpers::verify_with_jwks;
use crate::helpers::{Backend, TestApp, cli, spawn_app, spawn_replica};

both_backends!(
    a_rotated_key_is_published_first_signs_later_and_the_old_one_keeps_verifying,
    another_process_picks_up_a_rotation_without_restart,
);

async fn rotate(app: &TestApp, activate_in: Duration) -> keys::RotatedKey {
    let kek = load_kek(&app.settings).unwrap();
    keys::rotate(
        &app.store,
        &kek,
        &app.clock,
        DEFAULT_TENANT,
        SigningAlg::EdDSA,
        activate_in,
        app.settings.access_token_ttl + Duration::from_secs(60),
    )
    .await
    .unwrap()
}

/// Polls GetJwks until it lists `n` keys (replicas reload every 200 ms here).
async fn wait_for_key_count(app: &TestApp, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kids: Vec<String> = app.jwks().await.keys.into_iter().map(|k| k.kid).collect();
        if kids.len() == n {
            return kids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "JWKS never had {n} keys: {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn a_rotated_key_is_published_first_signs_later_and_the_old_one_keeps_verifying(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let before = app.login("kim@example.com").await;
    let old_kid = kid_of(&before.verify.token);

    let new = rotate(&app, Duration::from_secs(3600)).await;
    let kids = wait_for_key_count(&app, 2).await;
    assert!(kids.contains(&new.kid) && kids.contains(&old_kid));

    // Published, but not signing yet.
    let r = app.refresh(&before.verify.refresh_token).await.unwrap();
    assert_eq!(kid_of(&r.token), old_kid);

    // After the activation delay the new key signs...
    app.clock.advance(Duration::from_secs(3600));
    let r = app.refresh(&r.refresh_token).await.unwrap();
    assert_eq!(kid_of(&r.token), new.kid);
    verify_with_jwks(&app, &r.token).await;
    // ...and a token the old key signed still verifies from the JWKS.
    let (old_header, _) = verify_with_jwks(&app, &before.verify.token).await;
    assert_eq!(old_header.kid.as_deref(), Some(old_kid.as_str()));
    app.clock.advance(app.settings.access_token_ttl);
    tokio::time::sleep(Duration::from_millis(400)).await; // two reloads
    verify_with_jwks(&app, &before.verify.token).await;

    // Once every token the old key signed has expired, it leaves the JWKS.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(wait_for_key_count(&app, 1).await, vec![new.kid]);
}

async fn another_process_picks_up_a_rotation_without_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let replica = spawn_replica(&app, |_| {}).await;
    assert_eq!(
        wait_for_key_count(&replica, 1).await,
        wait_for_key_count(&app, 1).await
    );

    let new = rotate(&app, Duration::from_secs(1)).await;

    let kids = wait_for_key_count(&replica, 2).await;
    assert!(kids.contains(&new.kid));
    // Both replicas sign with the new key once it is active.
    replica.clock.advance(Duration::from_secs(2));
    let login = replica.login("lee@example.com").await;
    assert_eq!(kid_of(&login.verify.token), new.kid);
    // And the first process publishes it too (on its next reload).
    assert!(wait_for_key_count(&app, 2).await.contains(&new.kid));
    verify_with_jwks(&app, &login.verify.token).await;
}

#[tokio::test]
async fn the_keys_rotate_command_adds_a_key_to_a_running_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let out = cli(
        &app,
        &["keys", "rotate", "--activate-in", "30m", "--alg", "ES256"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("added ES256 key"), "{stdout}");

    wait_for_key_count(&app, 2).await;
    let algs: Vec<_> = app.jwks().await.keys.into_iter().map(|k| k.alg).collect();
    assert_eq!(algs, vec!["EdDSA".to_owned(), "ES256".to_owned()]);

    let list = cli(&app, &["keys", "list"]).await;
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("signing") && listing.contains("pending"),
        "{listing}"
    );
}

crate::matrix!(each_tenant_signs_with_keys_of_its_own);

/// Two apps on one deployment with the same issuer and audience (the
/// careless set-up): a token of one still never verifies as the other's,
/// because each tenant signs with keys of its own and publishes only those.
async fn each_tenant_signs_with_keys_of_its_own(case: crate::helpers::Case) {
    use latchkey::{auth::tenants::TenantSettings, proto};

    let app = crate::helpers::spawn_app(case).await;
    let same_audience = TenantSettings {
        audience: Some(app.settings.audience.clone()),
        ..Default::default()
    };
    let (shop_key, shop) = app.tenant("shop", same_audience).await;
    let main_token = app.login("ann@example.com").await.verify.token;
    let started = shop
        .start_auth(proto::StartAuthRequest {
            email: "bob@example.com".into(),
            method: proto::Method::Code as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let code = app.smtp.wait_for("bob@example.com").await.code();
    let shop_token = shop
        .verify(proto::VerifyRequest {
            session_id: started.session_id,
            code,
            ..Default::default()
        })
        .await
        .unwrap()
        .token;

    let kids = |jwks: proto::GetJwksResponse| -> Vec<String> {
        jwks.keys.into_iter().map(|k| k.kid).collect()
    };
    let main_kids = kids(app.jwks().await);
    let shop_kids = kids(app.api.tenant_jwks("shop").await.unwrap());
    assert_eq!(
        kids(app.api.tenant_jwks("default").await.unwrap()),
        main_kids
    );
    assert!(main_kids.contains(&kid_of(&main_token)));
    assert!(shop_kids.contains(&kid_of(&shop_token)));
    assert!(!main_kids.contains(&kid_of(&shop_token)));
    assert!(!shop_kids.contains(&kid_of(&main_token)));
    // The same claims a careless verifier would check...
    let claims = |t: &str| -> serde_json::Value {
        use base64::Engine;
        let payload = t.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims(&main_token)["aud"], claims(&shop_token)["aud"]);
    assert_eq!(claims(&main_token)["iss"], claims(&shop_token)["iss"]);
    // ...and still the main app's JWKS verifies only its own tokens.
    verify_with_jwks(&app, &main_token).await;
    let foreign = jsonwebtoken::decode_header(&shop_token).unwrap();
    let main_jwks = app.jwks().await;
    assert!(
        main_jwks
            .keys
            .iter()
            .all(|k| Some(&k.kid) != foreign.kid.as_ref())
    );

    // Server-side checks follow the same keys.
    let introspect = |client: &crate::helpers::ApiClient, token: &str| {
        let client = client.clone();
        let token = token.to_owned();
        async move {
            client
                .introspect_token(proto::IntrospectTokenRequest { token })
                .await
                .unwrap()
                .active
        }
    };
    assert!(introspect(&shop, &shop_token).await);
    assert!(!introspect(&shop, &main_token).await);
    assert!(!introspect(&app.api, &shop_token).await);

    // An unknown tenant has no key set.
    let unknown = app.api.tenant_jwks("nobody").await.unwrap_err();
    assert_eq!(unknown.code, "NOT_FOUND");
    unknown.assert_status(tonic::Code::NotFound, 404);

    // Over gRPC, a call without a tenant id answers for the key's tenant.
    if case.transport == crate::helpers::Transport::Grpc {
        let mut request = tonic::Request::new(proto::GetJwksRequest::default());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {shop_key}").parse().unwrap(),
        );
        let by_key = app.grpc_client().get_jwks(request).await.unwrap();
        assert_eq!(kids(by_key.into_inner()), shop_kids);
    }
}

#[tokio::test]
async fn the_keys_rotate_command_rotates_one_tenant_or_all() {
    let app = spawn_app(Backend::Sqlite).await;
    app.tenant("shop", latchkey::auth::tenants::TenantSettings::default())
        .await;
    let count = |tenant: &'static str| {
        let app = &app;
        async move { app.api.tenant_jwks(tenant).await.unwrap().keys.len() }
    };
    assert_eq!((count("default").await, count("shop").await), (1, 1));

    let out = cli(&app, &["keys", "rotate", "--tenant", "shop"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("tenant shop: added"),
        "{stdout}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count("shop").await != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop never had 2 keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count("default").await, 1, "only shop rotated");
    let listed = cli(&app, &["keys", "list", "--tenant", "shop"]).await;
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("pending"), "{listing}");

    let out = cli(&app, &["keys", "rotate", "--all-tenants"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("tenant default: added") && stdout.contains("tenant shop: added"),
        "{stdout}"
    );
    let unknown = cli(&app, &["keys", "rotate", "--tenant", "nobody"]).await;
    assert!(!unknown.status.success());
}
