//! The command line as an operator uses it: the real binary, run in a shell
//! whose environment holds the server's settings (as a pod's does).

use latchkey::{
    auth::{apikeys::Scope, tenants::TenantSettings},
    proto,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::tenants::{admin_client, with_key};

both_backends!(
    tenant_commands_store_exactly_what_was_typed_like_the_admin_service,
    tenant_repair_clears_the_copies_of_server_defaults_the_old_cli_stored,
    a_tenants_passkey_relying_party_is_set_and_checked_from_the_command_line,
);

/// Server settings in the operator's environment: none of them may leak into
/// a tenant the command line writes.
const SERVER_ENV: [(&str, &str); 6] = [
    ("LATCHKEY_ISSUER", "https://login.example"),
    ("LATCHKEY_AUDIENCE", "main-app"),
    ("LATCHKEY_CODE_LENGTH", "8"),
    ("LATCHKEY_RATE_LIMIT_EMAIL", "9"),
    ("LATCHKEY_APP_NAME", "Main"),
    ("LATCHKEY_ACCESS_TOKEN_TTL", "10m"),
];

/// Runs `latchkey <args>` against the app's database with `envs` set.
async fn run(app: &TestApp, envs: &[(&str, &str)], args: &[&str]) -> String {
    let out = crate::helpers::cli_with_env(app, envs, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "latchkey {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn tenant_commands_store_exactly_what_was_typed_like_the_admin_service(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin_key = app
        .admin
        .create_api_key("default", "ops", Scope::Admin, None)
        .await
        .unwrap()
        .key;
    let mut admin = admin_client(&app).await;
    let reader = admin.clone();
    let settings_of = |id: String| {
        let mut admin = reader.clone();
        let key = admin_key.clone();
        async move {
            admin
                .get_tenant(with_key(proto::GetTenantRequest { tenant_id: id }, &key))
                .await
                .unwrap()
                .into_inner()
                .settings
                .unwrap_or_default()
        }
    };

    // Create: the same flags and the same AdminService request store the same.
    let cases: [(&[&str], proto::TenantSettings); 3] = [
        (&[], proto::TenantSettings::default()),
        (
            &["--audience", "shop-api", "--code-length", "7"],
            proto::TenantSettings {
                audience: Some("shop-api".into()),
                code_length: Some(7),
                ..Default::default()
            },
        ),
        (
            &[
                "--signup-policy",
                "login-only",
                "--rate-limit-ip",
                "0",
                "--access-token-ttl",
                "5m",
                "--allowed-validation-url",
                "https://shop.example/auth",
            ],
            proto::TenantSettings {
                signup_policy: proto::SignupPolicy::LoginOnly as i32,
                rate_limit_ip: Some(0),
                access_token_ttl_seconds: Some(300),
                allowed_validation_urls: vec!["https://shop.example/auth".into()],
                ..Default::default()
            },
        ),
    ];
    for (i, (flags, settings)) in cases.iter().enumerate() {
        let (by_cli, by_api) = (format!("cli-{i}"), format!("api-{i}"));
        let mut args = vec!["tenant", "create", "--id", &by_cli, "--name", "Shop"];
        args.extend_from_slice(flags);
        run(&app, &SERVER_ENV, &args).await;
        admin
            .create_tenant(with_key(
                proto::CreateTenantRequest {
                    tenant_id: by_api.clone(),
                    name: "Shop".into(),
                    settings: Some(settings.clone()),
                },
                &admin_key,
            ))
            .await
            .unwrap();
        let stored = settings_of(by_cli.clone()).await;
        assert_eq!(stored, *settings, "tenant create {flags:?}");
        assert_eq!(stored, settings_of(by_api).await);
    }
    // The first tenant inherits everything: its tokens carry the server's
    // issuer as the server is configured (not as the shell was) and, as any
    // tenant but the default, its own id as the audience.
    let plain = app.admin.tenant("cli-0").unwrap();
    assert_eq!(plain.settings, TenantSettings::default());
    assert_eq!(plain.policy.issuer, app.settings.issuer);
    assert_eq!(plain.policy.audience, "cli-0");

    // Update one setting: the others (a custom audience) stay.
    run(
        &app,
        &SERVER_ENV,
        &["tenant", "update", "cli-1", "--code-length", "9"],
    )
    .await;
    admin
        .update_tenant(with_key(
            proto::UpdateTenantRequest {
                tenant_id: "api-1".into(),
                settings: Some(proto::TenantSettings {
                    code_length: Some(9),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap();
    let stored = settings_of("cli-1".into()).await;
    assert_eq!(stored.audience.as_deref(), Some("shop-api"));
    assert_eq!(stored.code_length, Some(9));
    assert_eq!(stored, settings_of("api-1".into()).await);

    // Rename a tenant made over gRPC: its settings do not change.
    let before = settings_of("api-2".into()).await;
    run(
        &app,
        &SERVER_ENV,
        &["tenant", "update", "api-2", "--name", "Renamed"],
    )
    .await;
    assert_eq!(settings_of("api-2".into()).await, before);
    app.admin.list_tenants().await.unwrap(); // (reloads this process's copy)
    assert_eq!(app.admin.tenant("api-2").unwrap().name, "Renamed");

    // Clear: back to the server default on both.
    run(
        &app,
        &SERVER_ENV,
        &["tenant", "update", "cli-1", "--clear", "audience"],
    )
    .await;
    admin
        .update_tenant(with_key(
            proto::UpdateTenantRequest {
                tenant_id: "api-1".into(),
                clear_settings: vec!["audience".into()],
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .unwrap();
    let stored = settings_of("cli-1".into()).await;
    assert_eq!(stored.audience, None);
    assert_eq!(stored, settings_of("api-1".into()).await);

    // Show and list print what is stored, and the tenant's own JWKS.
    let shown = run(&app, &SERVER_ENV, &["tenant", "show", "cli-0"]).await;
    assert!(shown.contains("overrides: {}"), "{shown}");
    assert!(
        shown.contains("/tenants/cli-0/.well-known/jwks.json"),
        "{shown}"
    );
    let listed = run(&app, &SERVER_ENV, &["tenant", "list"]).await;
    let line = listed.lines().find(|l| l.starts_with("cli-0 ")).unwrap();
    assert!(line.trim_end().ends_with("{}"), "{listed}");
}

async fn tenant_repair_clears_the_copies_of_server_defaults_the_old_cli_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    // The command line runs with the built-in defaults here (no LATCHKEY_*
    // settings in its environment), as the old one did when it wrote them.
    let d = &latchkey::config::Settings::defaults();
    let secs = |t: std::time::Duration| Some(u32::try_from(t.as_secs()).unwrap());
    // What `tenant create --id old --name Old --code-length 8` of 0.1 stored:
    // every server default as the tenant's own, and the one typed value.
    let old_cli = TenantSettings {
        issuer: Some(d.issuer.clone()),
        audience: Some(d.audience.clone()),
        access_token_ttl_seconds: secs(d.access_token_ttl),
        session_ttl_seconds: secs(d.session_ttl),
        code_length: Some(8),
        code_ttl_seconds: secs(d.code_ttl),
        code_max_attempts: Some(d.code_max_attempts),
        mail_from: Some(d.mail_from.clone()),
        app_name: Some(d.app_name.clone()),
        default_locale: Some(d.default_locale.clone()),
        rate_limit_email: Some(d.rate_limit_email),
        rate_limit_ip: Some(d.rate_limit_ip),
        rate_limit_tenant: Some(d.rate_limit_tenant),
        verify_failure_budget: Some(d.verify_failure_budget),
        ..Default::default()
    };
    app.admin
        .create_tenant("old", "Old", old_cli.clone())
        .await
        .unwrap();
    // A tenant that pins two values on purpose is not the old CLI's work.
    let pinned = TenantSettings {
        issuer: Some(d.issuer.clone()),
        code_length: Some(d.code_length),
        ..Default::default()
    };
    app.admin
        .create_tenant("pinned", "Pinned", pinned.clone())
        .await
        .unwrap();
    // The repair runs with the server's own settings (here: the defaults).
    let server_env: [(&str, &str); 0] = [];

    let plan = run(&app, &server_env, &["tenant", "repair"]).await;
    assert!(
        plan.contains("tenant old: clear issuer, audience"),
        "{plan}"
    );
    assert!(plan.contains("keep code_length"), "{plan}");
    assert!(plan.contains("run again with --apply"), "{plan}");
    assert!(!plan.contains("pinned"), "{plan}");
    assert_eq!(
        app.admin.tenant("old").unwrap().settings,
        old_cli,
        "dry run"
    );

    let done = run(&app, &server_env, &["tenant", "repair", "--apply"]).await;
    assert!(done.contains("repaired 1 tenant"), "{done}");
    app.admin.list_tenants().await.unwrap();
    let repaired = app.admin.tenant("old").unwrap();
    assert_eq!(
        repaired.settings,
        TenantSettings {
            code_length: Some(8),
            ..Default::default()
        }
    );
    // Its tokens carry its own audience again, not the default tenant's.
    assert_eq!(repaired.policy.audience, "old");
    assert_eq!(app.admin.tenant("pinned").unwrap().settings, pinned);

    let again = run(&app, &server_env, &["tenant", "repair"]).await;
    assert!(again.contains("nothing to repair"), "{again}");
}

#[tokio::test]
async fn help_never_shows_secrets_from_the_environment() {
    let secrets = [
        ("LATCHKEY_DATABASE_URL", "postgres://app:db-hunter2@db/app"),
        ("LATCHKEY_SMTP_URL", "smtp://mailer:smtp-hunter2@relay:587"),
        (
            "LATCHKEY_KEY_ENCRYPTION_KEY",
            "a2VrLWh1bnRlcjIta2VrLWh1bnRlcjIta2VrLWh1bnQ=",
        ),
    ];
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["tenant", "create", "--help"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .envs(secrets)
            .env("LATCHKEY_ISSUER", "https://visible.example")
            .output()
            .await
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{help}");
        assert!(help.contains("LATCHKEY_DATABASE_URL"), "{help}");
        for (_, value) in secrets {
            assert!(!help.contains(value), "{args:?} shows a secret:\n{help}");
        }
        assert!(!help.contains("hunter2"), "{help}");
    }
}

async fn a_tenants_passkey_relying_party_is_set_and_checked_from_the_command_line(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let no_env: [(&str, &str); 0] = [];
    #[rustfmt::skip]
    run(&app, &no_env, &[
        "tenant", "create", "--id", "shop", "--name", "Shop",
        "--passkey-rp-id", "shop.test",
        "--passkey-origin", "https://shop.test", "--passkey-origin", "https://www.shop.test",
    ])
    .await;
    let shown = run(&app, &no_env, &["tenant", "show", "shop"]).await;
    assert!(shown.contains("passkey_rp_id=shop.test"), "{shown}");
    assert!(shown.contains("https://www.shop.test"), "{shown}");
    // An origin outside the relying-party id is refused, and nothing changes.
    #[rustfmt::skip]
    let out = crate::helpers::cli_with_env(&app, &no_env, &[
        "tenant", "update", "shop", "--passkey-origin", "https://evil.test",
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("passkey_origins"), "{stderr}");
    let again = run(&app, &no_env, &["tenant", "show", "shop"]).await;
    assert_eq!(again, shown);
}
