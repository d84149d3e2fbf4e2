use std::time::Duration;

use latchkey::{
    auth::{DEFAULT_TENANT, keys},
    config::SigningAlg,
    server::load_kek,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, cli, spawn_app, spawn_replica};
use crate::login::verify_with_jwks;

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
