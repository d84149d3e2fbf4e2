//! The commands of the `latchkey` binary: serve, migrate, openapi, and the
//! administration of signing keys, tenants, API keys and users (straight on
//! the database; running servers pick changes up within a second).

mod args;

pub use args::{
    ApikeyCommand, Cli, Command, EmailCommand, EmailPart, EmailPurpose, KeysCommand, OutboxCommand,
    TenantCommand, TenantSettingsArgs, UserCommand,
};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        DEFAULT_TENANT, User,
        admin::Admin,
        apikeys::Scope,
        keys,
        tenants::{SETTING_NAMES, Tenant, TenantSettings, Tenants},
        users::UserFilter,
    },
    clock::Clock,
    config::Settings,
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
        Command::User { command } => user_command(settings, command).await,
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
        KeysCommand::Rotate {
            activate_in,
            alg,
            tenant,
            all_tenants,
        } => {
            let alg = alg.unwrap_or(settings.signing_alg);
            if activate_in < settings.key_reload_interval * 2 {
                eprintln!(
                    "warning: the key signs before every replica and verifier can have fetched \
                     it; tokens it signs may be rejected until they refresh their JWKS"
                );
            }
            let tenants = Tenants::load(store.clone(), settings.default_policy()).await?;
            let chosen: Vec<Arc<Tenant>> = if all_tenants {
                tenants.all()
            } else {
                vec![
                    tenants
                        .get(&tenant)
                        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant:?}"))?,
                ]
            };
            for tenant in chosen {
                let retire_after = keys::retirement_delay_for(
                    tenant.policy.access_token_ttl,
                    settings.access_token_ttl,
                    settings.key_reload_interval,
                );
                let key = keys::rotate(
                    &store,
                    &kek,
                    &clock,
                    &tenant.id,
                    alg,
                    activate_in,
                    retire_after,
                )
                .await?;
                println!(
                    "tenant {}: added {} key {}: published now, signs from {}; older keys leave \
                     the JWKS at {}",
                    tenant.id,
                    key.alg.as_str(),
                    key.kid,
                    rfc3339(key.activates_at),
                    rfc3339(key.older_keys_retire_at)
                );
            }
        }
        KeysCommand::List { tenant } => {
            let now = clock.now_ms();
            let all = store.all_signing_keys(&tenant).await?;
            anyhow::ensure!(
                !all.is_empty(),
                "tenant {tenant:?} has no signing keys (yet: a server makes its first key when \
                 it loads the tenant)"
            );
            let states = keys::key_states(&all, now);
            println!(
                "{:<4} {:<6} {:<44} {:<21} {:<21} state",
                "gen", "alg", "kid", "signs from", "published until"
            );
            for (key, state) in all.into_iter().zip(states) {
                println!(
                    "{:<4} {:<6} {:<44} {:<21} {:<21} {}",
                    key.generation,
                    key.alg,
                    key.kid,
                    rfc3339(key.activates_at),
                    key.published_until
                        .map(rfc3339)
                        .unwrap_or_else(|| "-".into()),
                    state.as_str(),
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
    let tenants = Tenants::load(store.clone(), settings.default_policy()).await?;
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
                    settings.into_settings(),
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
                .update_tenant(&id, name.as_deref(), &settings.into_settings(), &clear)
                .await?;
            print_tenant(&t);
        }
        TenantCommand::Repair { apply } => repair_tenants(&admin, apply).await?,
    }
    Ok(())
}

/// The settings `tenant create` and `tenant update` of latchkey 0.1 did not
/// store unless typed; it stored every other one, typed or not (the
/// server's values of the moment).
/// (Nor the passkey settings and static claims, which came later.)
const NOT_WRITTEN_BY_THE_OLD_CLI: [&str; 8] = [
    "allowed_validation_urls",
    "signup_policy",
    "notify_unknown_address",
    "default_validation_url",
    "passkey_rp_id",
    "passkey_rp_name",
    "passkey_origins",
    "static_claims",
];

fn written_by_the_old_cli() -> impl Iterator<Item = &'static str> {
    SETTING_NAMES
        .iter()
        .copied()
        .filter(|name| !NOT_WRITTEN_BY_THE_OLD_CLI.contains(name))
}

/// Clears, on every tenant the old command line wrote, the overrides that
/// only repeat this server's defaults. Overrides that differ are kept (they
/// may have been typed) and listed, for the operator to `--clear` by hand.
async fn repair_tenants(admin: &Admin, apply: bool) -> anyhow::Result<()> {
    let mut repaired = 0;
    for tenant in admin.list_tenants().await? {
        if tenant.id == DEFAULT_TENANT {
            continue;
        }
        let stored = serde_json::to_value(&tenant.settings)?;
        let old_cli = written_by_the_old_cli().all(|name| stored.get(name).is_some());
        if !old_cli {
            continue;
        }
        let redundant = tenant.settings.repeating_defaults(admin.defaults());
        let kept: Vec<&str> = written_by_the_old_cli()
            .filter(|name| !redundant.contains(name))
            .collect();
        println!(
            "tenant {}: clear {} (copies of the server defaults){}",
            tenant.id,
            redundant.join(", "),
            if kept.is_empty() {
                String::new()
            } else {
                format!(
                    "; keep {} (they differ from the defaults: clear by hand with \
                     `latchkey tenant update {} --clear <name>` if they were not chosen)",
                    kept.join(", "),
                    tenant.id
                )
            }
        );
        if apply && !redundant.is_empty() {
            let clear: Vec<String> = redundant.iter().map(|n| (*n).to_owned()).collect();
            admin
                .update_tenant(&tenant.id, None, &TenantSettings::default(), &clear)
                .await?;
        }
        repaired += 1;
    }
    match (repaired, apply) {
        (0, _) => println!("no tenant holds copies of the server defaults: nothing to repair"),
        (n, true) => println!("repaired {n} tenant(s)"),
        (n, false) => println!("{n} tenant(s) to repair: run again with --apply"),
    }
    Ok(())
}

fn print_tenant(t: &Tenant) {
    println!("id:        {}", t.id);
    println!("name:      {}", t.name);
    println!("created:   {}", rfc3339(t.created_at));
    println!("jwks:      {}", jwks_path(&t.id));
    println!(
        "overrides: {}",
        serde_json::to_string_pretty(&t.settings).unwrap_or_default()
    );
    println!(
        "effective: issuer={} audience={} access_token_ttl={}s session_ttl={}s code_length={} code_ttl={}s signup={:?} passkey_rp_id={}",
        t.policy.issuer,
        t.policy.audience,
        t.policy.access_token_ttl.as_secs(),
        t.policy.session_ttl.as_secs(),
        t.policy.code_length,
        t.policy.code_ttl.as_secs(),
        t.policy.signup_policy,
        t.policy.passkeys.rp_id.as_deref().unwrap_or("off"),
    );
}

/// Where a tenant's public keys are served on the HTTP listener.
fn jwks_path(tenant_id: &str) -> String {
    if tenant_id == DEFAULT_TENANT {
        "/.well-known/jwks.json".to_owned()
    } else {
        format!("/tenants/{tenant_id}/.well-known/jwks.json")
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
                    k.state(now),
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

/// A user named by id, or by address when it has an `@`.
async fn find_user(admin: &Admin, tenant: &str, user: &str) -> anyhow::Result<User> {
    let (id, email) = if user.contains('@') {
        ("", user)
    } else {
        (user, "")
    };
    Ok(admin.find_user(tenant, id, email).await?)
}

async fn user_command(settings: Settings, command: UserCommand) -> anyhow::Result<()> {
    let admin = admin(&settings).await?;
    match command {
        UserCommand::List {
            tenant,
            email_prefix,
            created_after,
            created_before,
            limit,
            page_token,
        } => {
            let filter = UserFilter {
                email_prefix,
                created_from: created_after,
                created_before,
                page_size: limit.max(1),
                page_token,
            };
            let page = admin.users(&tenant)?.list(&tenant, &filter).await?;
            println!(
                "{:<37} {:<32} {:<21} {:<9} app_metadata",
                "id", "email", "created", "state"
            );
            for u in &page.users {
                println!(
                    "{:<37} {:<32} {:<21} {:<9} {}",
                    u.id,
                    u.email,
                    rfc3339(u.created_at),
                    if u.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                    u.app_metadata
                );
            }
            match page.next_page_token {
                Some(token) => println!("next page: --page-token {token}"),
                None => println!("({} user(s), last page)", page.users.len()),
            }
        }
        UserCommand::Show { user, tenant } => {
            print_user(&find_user(&admin, &tenant, &user).await?);
        }
        UserCommand::Disable { user, tenant } => {
            let found = find_user(&admin, &tenant, &user).await?;
            let (u, ended) = admin.users(&tenant)?.disable(&tenant, &found.id).await?;
            print_user(&u);
            println!("disabled: {ended} login(s) ended; they cannot log in until enabled");
        }
        UserCommand::Enable { user, tenant } => {
            let found = find_user(&admin, &tenant, &user).await?;
            let u = admin.users(&tenant)?.enable(&tenant, &found.id).await?;
            print_user(&u);
            println!("enabled: they can log in again");
        }
        UserCommand::Delete { user, tenant } => {
            let found = find_user(&admin, &tenant, &user).await?;
            admin.delete_user(&tenant, &found.id).await?;
            println!(
                "deleted user {}: their sessions, logins and emails are gone",
                found.id
            );
        }
    }
    Ok(())
}

fn print_user(u: &User) {
    println!("id:           {}", u.id);
    println!("email:        {}", u.email);
    println!("created:      {}", rfc3339(u.created_at));
    println!("updated:      {}", rfc3339(u.updated_at));
    println!(
        "disabled:     {}",
        u.disabled_at.map(rfc3339).unwrap_or_else(|| "no".into())
    );
    println!("app_metadata: {}", u.app_metadata);
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
        EmailPurpose::EmailChanged => templates.email_changed(
            &tenant,
            &locale,
            &settings.app_name,
            email,
            "a***@new.example.com",
        )?,
    };
    match part {
        EmailPart::Subject => println!("{}", rendered.subject),
        EmailPart::Text => print!("{}", rendered.text),
        EmailPart::Html => print!("{}", rendered.html),
    }
    Ok(())
}
