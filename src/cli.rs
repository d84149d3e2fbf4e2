//! The commands of the `latchkey` binary: serve, migrate, openapi, and the
//! administration of signing keys, tenants and API keys (straight on the
//! database; running servers pick changes up within a second).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        DEFAULT_TENANT, Policy,
        admin::{Admin, ApiKeyInfo},
        apikeys::Scope,
        keys,
        tenants::{SignupPolicy, Tenant, TenantSettings, Tenants},
    },
    clock::Clock,
    config::{
        ApikeyCommand, Cli, Command, EmailCommand, EmailPart, EmailPurpose, KeysCommand,
        OutboxCommand, Settings, SignupPolicyArg, TenantCommand, TenantSettingsArgs,
    },
    server::{self, Server},
};

/// Runs the command the command line names (`serve` by default).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            server::open_store(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crate::api::openapi::document_text());
            Ok(())
        }
        Command::Tenant { command } => tenant_command(settings, command).await,
        Command::Apikey { command } => apikey_command(settings, command).await,
        Command::Outbox { command } => outbox_command(settings, command).await,
        Command::Email { command } => email_command(&settings, command),
        Command::Keys { command } => keys_command(settings, command).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let server = Server::build(settings, Clock::system()).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    server.run(shutdown).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn keys_command(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let kek = server::load_kek(&settings)?;
    let store = server::open_store(&settings).await?;
    let clock = Clock::system();
    match command {
        KeysCommand::Rotate { activate_in, alg } => {
            let alg = alg.unwrap_or(settings.signing_alg);
            if activate_in < settings.key_reload_interval * 2 {
                eprintln!(
                    "warning: the key signs before every replica and verifier can have fetched \
                     it; tokens it signs may be rejected until they refresh their JWKS"
                );
            }
            // Older keys stay published until every token they may still sign
            // has expired: the longest access-token lifetime of any tenant,
            // plus the time a replica may take to notice the new key, plus
            // clock skew.
            let tenants = Tenants::load(store.clone(), Policy::from_settings(&settings)).await?;
            let longest = tenants
                .all()
                .iter()
                .map(|t| t.policy.access_token_ttl)
                .chain([settings.access_token_ttl])
                .max()
                .unwrap_or(settings.access_token_ttl);
            let retire_after =
                longest + settings.key_reload_interval + std::time::Duration::from_secs(60);
            let key = keys::rotate(
                &store,
                &kek,
                &clock,
                DEFAULT_TENANT,
                alg,
                activate_in,
                retire_after,
            )
            .await?;
            println!(
                "added {} key {}: published now, signs from {}; older keys leave the JWKS at {}",
                key.alg.as_str(),
                key.kid,
                rfc3339(key.activates_at),
                rfc3339(key.older_keys_retire_at)
            );
        }
        KeysCommand::List => {
            let now = clock.now_ms();
            let all = store.all_signing_keys(DEFAULT_TENANT).await?;
            let signer = all
                .iter()
                .filter(|k| k.activates_at <= now && k.published_until.is_none_or(|u| u > now))
                .map(|k| k.generation)
                .max();
            println!(
                "{:<4} {:<6} {:<44} {:<21} {:<21} state",
                "gen", "alg", "kid", "signs from", "published until"
            );
            for key in all {
                let state = if key.published_until.is_some_and(|u| u <= now) {
                    "retired"
                } else if Some(key.generation) == signer {
                    "signing"
                } else if key.activates_at > now {
                    "pending"
                } else {
                    "retiring"
                };
                println!(
                    "{:<4} {:<6} {:<44} {:<21} {:<21} {state}",
                    key.generation,
                    key.alg,
                    key.kid,
                    rfc3339(key.activates_at),
                    key.published_until
                        .map(rfc3339)
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The admin operations straight on the database named by the settings.
async fn admin(settings: &Settings) -> anyhow::Result<Admin> {
    let store = server::open_store(settings).await?;
    let tenants = Tenants::load(store.clone(), Policy::from_settings(settings)).await?;
    Ok(Admin::new(store, tenants, None, Clock::system()))
}

async fn tenant_command(settings: Settings, command: TenantCommand) -> anyhow::Result<()> {
    let admin = admin(&settings).await?;
    match command {
        TenantCommand::Create { id, name, settings } => {
            let t = admin
                .create_tenant(
                    id.as_deref().unwrap_or_default(),
                    &name,
                    settings_from_args(*settings),
                )
                .await?;
            println!("created tenant {} ({})", t.id, t.name);
            println!(
                "next: latchkey apikey create --tenant {} --name <what it is for>",
                t.id
            );
        }
        TenantCommand::List => {
            println!("{:<38} {:<30} overrides", "id", "name");
            for t in admin.list_tenants().await? {
                println!(
                    "{:<38} {:<30} {}",
                    t.id,
                    t.name,
                    serde_json::to_string(&t.settings)?
                );
            }
        }
        TenantCommand::Show { id } => print_tenant(&*admin.tenant(&id)?),
        TenantCommand::Update {
            id,
            name,
            settings,
            clear,
        } => {
            let t = admin
                .update_tenant(&id, name.as_deref(), &settings_from_args(*settings), &clear)
                .await?;
            print_tenant(&t);
        }
    }
    Ok(())
}

fn print_tenant(t: &Tenant) {
    println!("id:        {}", t.id);
    println!("name:      {}", t.name);
    println!("created:   {}", rfc3339(t.created_at));
    println!(
        "overrides: {}",
        serde_json::to_string_pretty(&t.settings).unwrap_or_default()
    );
    println!(
        "effective: issuer={} audience={} access_token_ttl={}s session_ttl={}s code_length={} code_ttl={}s signup={:?}",
        t.policy.issuer,
        t.policy.audience,
        t.policy.access_token_ttl.as_secs(),
        t.policy.session_ttl.as_secs(),
        t.policy.code_length,
        t.policy.code_ttl.as_secs(),
        t.policy.signup_policy,
    );
}

fn settings_from_args(a: TenantSettingsArgs) -> TenantSettings {
    let secs = |d: Option<Duration>| d.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    TenantSettings {
        issuer: a.issuer,
        audience: a.audience,
        access_token_ttl_seconds: secs(a.access_token_ttl),
        session_ttl_seconds: secs(a.session_ttl),
        code_length: a.code_length,
        code_ttl_seconds: secs(a.code_ttl),
        code_max_attempts: a.code_max_attempts,
        mail_from: a.mail_from,
        app_name: a.app_name,
        allowed_validation_urls: Some(a.allowed_validation_urls).filter(|v| !v.is_empty()),
        default_locale: a.default_locale,
        signup_policy: a.signup_policy.map(|p| match p {
            SignupPolicyArg::LoginOrCreate => SignupPolicy::LoginOrCreate,
            SignupPolicyArg::LoginOnly => SignupPolicy::LoginOnly,
        }),
        notify_unknown_address: a.notify_unknown_address,
        default_validation_url: a.default_validation_url,
        rate_limit_email: a.rate_limit_email,
        rate_limit_ip: a.rate_limit_ip,
        rate_limit_tenant: a.rate_limit_tenant,
        verify_failure_budget: a.verify_failure_budget,
    }
}

async fn apikey_command(settings: Settings, command: ApikeyCommand) -> anyhow::Result<()> {
    let admin = admin(&settings).await?;
    match command {
        ApikeyCommand::Create {
            tenant,
            name,
            scope,
            expires_in,
        } => {
            let scope = Scope::parse(&scope)
                .ok_or_else(|| anyhow::anyhow!("--scope must be `app` or `admin`"))?;
            let expires_at = expires_in.map(|d| Clock::system().now_ms() + crate::clock::millis(d));
            let created = admin
                .create_api_key(&tenant, &name, scope, expires_at)
                .await?;
            eprintln!(
                "created {} key {} for tenant {} (shown once, keep it secret):",
                scope.as_str(),
                created.info.prefix,
                tenant
            );
            println!("{}", created.key);
        }
        ApikeyCommand::List { tenant } => {
            println!(
                "{:<13} {:<20} {:<6} {:<24} {:<21} {:<21} {:<21} state",
                "prefix", "tenant", "scope", "name", "created", "last used", "expires"
            );
            let now = Clock::system().now_ms();
            for k in admin.list_api_keys(tenant.as_deref()).await? {
                println!(
                    "{:<13} {:<20} {:<6} {:<24} {:<21} {:<21} {:<21} {}",
                    k.prefix,
                    k.tenant_id,
                    k.scope.as_str(),
                    k.name,
                    rfc3339(k.created_at),
                    k.last_used_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    k.expires_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    key_state(&k, now),
                );
            }
        }
        ApikeyCommand::Revoke { prefix } => {
            admin.revoke_api_key(&prefix).await?;
            println!("revoked {prefix}: every server refuses it within a second");
        }
    }
    Ok(())
}

fn key_state(k: &ApiKeyInfo, now: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

async fn outbox_command(settings: Settings, command: OutboxCommand) -> anyhow::Result<()> {
    let store = server::open_store(&settings).await?;
    match command {
        OutboxCommand::List { state, limit } => {
            anyhow::ensure!(
                ["queued", "dead", "sent", "suppressed"].contains(&state.as_str()),
                "--state must be queued, dead, sent or suppressed"
            );
            let counts = store.outbox_counts().await?;
            println!(
                "queued {}, sent {}, dead {}",
                counts.queued, counts.sent, counts.dead
            );
            println!(
                "{:<37} {:<12} {:<24} {:<8} {:<21} last error",
                "id", "kind", "to", "attempts", "created"
            );
            for m in store.outbox_list(&state, limit).await? {
                println!(
                    "{:<37} {:<12} {:<24} {:<8} {:<21} {}",
                    m.id,
                    m.kind,
                    crate::auth::email::mask(&m.recipient),
                    m.attempts,
                    rfc3339(m.created_at),
                    m.last_error.unwrap_or_default()
                );
            }
        }
        OutboxCommand::Requeue { id, all } => {
            anyhow::ensure!(id.is_some() || all, "name a message id, or --all");
            let n = store
                .requeue_dead(id.as_deref(), Clock::system().now_ms())
                .await?;
            println!(
                "requeued {n} message(s); a running worker sends them within its poll interval"
            );
        }
    }
    store.close().await;
    Ok(())
}

fn email_command(settings: &Settings, command: EmailCommand) -> anyhow::Result<()> {
    use crate::mail::templates::{SignInEmail, Templates};
    let EmailCommand::Preview {
        purpose,
        locale,
        part,
        tenant,
    } = command;
    let templates = Templates::load(settings.template_dir.as_deref())?;
    let locale = templates.resolve_locale(&locale, "en").to_owned();
    let email = "ada@example.com";
    let link = "https://app.example.com/auth/callback?token=lkl_4r8Qw0sZJ2bVn3kYtX7mPc9LfH1aDe5GuRoTi6Wq2Ny";
    let sign_in = |code: bool, link_on: bool| {
        templates.sign_in(
            &tenant,
            &locale,
            &SignInEmail {
                app_name: &settings.app_name,
                email,
                code: code.then_some("482913"),
                link: link_on.then_some(link),
                minutes: i64::try_from(settings.code_ttl.as_secs() / 60).unwrap_or(10),
            },
        )
    };
    let rendered = match purpose {
        EmailPurpose::Code => sign_in(true, false)?,
        EmailPurpose::Link => sign_in(false, true)?,
        EmailPurpose::CodeAndLink => sign_in(true, true)?,
        EmailPurpose::NoAccount => {
            templates.no_account(&tenant, &locale, &settings.app_name, email)?
        }
    };
    match part {
        EmailPart::Subject => println!("{}", rendered.subject),
        EmailPart::Text => print!("{}", rendered.text),
        EmailPart::Html => print!("{}", rendered.html),
    }
    Ok(())
}
