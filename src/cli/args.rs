//! The command tree of the binary: commands and their flags. The settings
//! every command shares are [`Settings`] (`crate::config`).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    auth::{keys::SigningAlg, tenants::TenantSettings},
    config::{Settings, duration, duration_or_zero, signing_alg},
};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Passwordless email authentication for backends"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document of the JSON gateway.
    Openapi,
    /// Manage tenants (apps with their own users, keys and settings).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage users: list, show, disable, enable, delete.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Preview the emails with the configured templates (checks overrides).
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Inspect the email outbox and requeue dead messages.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Manage the token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key for a tenant: published in its JWKS at once,
    /// signing after the activation delay; the previous key stays published
    /// until every token it signed has expired.
    Rotate {
        /// The tenant whose keys rotate.
        #[arg(long, default_value = "default", conflicts_with = "all_tenants")]
        tenant: String,
        /// Rotate every tenant's keys.
        #[arg(long)]
        all_tenants: bool,
        /// How long the new key is published before it starts signing. Keep it
        /// longer than any verifier's JWKS cache lifetime.
        #[arg(long, env = "LATCHKEY_KEY_ACTIVATION_DELAY", default_value = "1h", value_parser = duration_or_zero)]
        activate_in: Duration,
        /// Algorithm of the new key: EdDSA, ES256 or RS256 (default:
        /// `--signing-alg`).
        #[arg(long, value_parser = signing_alg)]
        alg: Option<SigningAlg>,
    },
    /// List a tenant's signing keys and their state.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// 1 to 63 of a-z, 0-9 and - (the `tid` of its tokens); default: a UUID.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: Box<TenantSettingsArgs>,
    },
    /// List the tenants.
    List,
    /// Show a tenant and its settings.
    Show { id: String },
    /// Rename a tenant or change its settings.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: Box<TenantSettingsArgs>,
        /// Reset a setting to the server default (repeatable), e.g. `code_length`.
        #[arg(long = "clear")]
        clear: Vec<String>,
    },
    /// Remove the copies of the server defaults that `tenant create` and
    /// `tenant update` of latchkey 0.1 stored as every tenant's own settings
    /// (shows what it would do; `--apply` does it).
    Repair {
        /// Write the changes (without it, only show them).
        #[arg(long)]
        apply: bool,
    },
}

/// The value parser of a tenant setting's flag, by the setting's kind.
macro_rules! tenant_setting_parser {
    (seconds, $ty:ty) => {
        seconds
    };
    (choice, $ty:ty) => {
        |s: &str| s.parse::<$ty>()
    };
    (list, $ty:ty) => {
        clap::value_parser!(String)
    };
    ($kind:ident, $ty:ty) => {
        clap::value_parser!($ty)
    };
}

/// The `tenant create|update` flags, one per row of the tenant settings
/// table (`auth::settings`).
macro_rules! define_tenant_setting_args {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty as $kind:ident = $flag:literal => $rule:expr;)+) => {
        /// A tenant's overrides of the server defaults (absent: inherit). The
        /// ids differ from the server settings' of the same flag name, so a
        /// value of the server setting (its default or its `LATCHKEY_*`
        /// variable) can never be taken for one the operator typed here.
        #[derive(Debug, Args, Default)]
        pub struct TenantSettingsArgs {
            $(
                $(#[doc = $doc])*
                #[arg(long = $flag, id = concat!("tenant_", stringify!($name)),
                      value_parser = tenant_setting_parser!($kind, $ty))]
                pub $name: Option<$ty>,
            )+
        }

        impl TenantSettingsArgs {
            /// The settings typed.
            pub fn into_settings(self) -> TenantSettings {
                TenantSettings { $($name: self.$name,)+ }
            }
        }
    };
}

crate::auth::settings::with_tenant_settings!(define_tenant_setting_args);

/// A duration flag of a tenant setting, in whole seconds.
fn seconds(s: &str) -> Result<u32, String> {
    let d = duration(s)?;
    Ok(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List a tenant's users, oldest first, a page at a time.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only addresses starting with this.
        #[arg(long)]
        email_prefix: Option<String>,
        /// Only users created at or after this time (RFC 3339, e.g.
        /// `2026-11-01T00:00:00Z`).
        #[arg(long, value_parser = rfc3339_millis)]
        created_after: Option<i64>,
        /// Only users created before this time (RFC 3339).
        #[arg(long, value_parser = rfc3339_millis)]
        created_before: Option<i64>,
        /// Users per page (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Where to continue: the token the previous page printed.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show a user, by id or address.
    Show {
        /// The user id, or their address.
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Disable a user: every login of theirs ends now, and they cannot log
    /// in until enabled.
    Disable {
        /// The user id, or their address.
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Let a disabled user log in again (ended sessions stay ended).
    Enable {
        /// The user id, or their address.
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Delete a user and every trace of their address (sessions, logins,
    /// emails).
    Delete {
        /// The user id, or their address.
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

/// An RFC 3339 time as Unix milliseconds.
fn rfc3339_millis(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e} (want e.g. 2026-11-01T00:00:00Z)"))?;
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "must be after 1970".to_owned())?;
    i64::try_from(since.as_millis()).map_err(|_| "too far in the future".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key; it is printed once.
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        name: String,
        /// `app` (the AuthService of its tenant) or `admin` (the AdminService).
        #[arg(long, default_value = "app")]
        scope: String,
        /// The key stops working after this long (e.g. `90days`).
        #[arg(long, value_parser = duration)]
        expires_in: Option<Duration>,
    },
    /// List API keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an API key by its prefix.
    Revoke { prefix: String },
}

#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Render one email with sample values to stdout.
    Preview {
        #[arg(long, value_enum, default_value = "code")]
        purpose: EmailPurpose,
        #[arg(long, default_value = "en")]
        locale: String,
        #[arg(long, value_enum, default_value = "html")]
        part: EmailPart,
        /// Use this tenant's template overrides.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmailPurpose {
    Code,
    Link,
    CodeAndLink,
    NoAccount,
    EmailChanged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmailPart {
    Subject,
    Text,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List messages (recipients masked).
    List {
        /// `queued`, `dead` or `sent`.
        #[arg(long, default_value = "queued")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue dead messages again: one by id, or all with `--all`.
    Requeue {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}
