//! Configuration: every setting is a flag and a `LATCHKEY_*` environment
//! variable, with defaults that make `cargo run` work with nothing installed
//! (SQLite under `./latchkey-data`, the dev mailbox, gRPC on 127.0.0.1:50051).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

mod checks;

pub use checks::ConfigError;

use clap::{Args, Parser, ValueEnum};

use crate::auth::keys::SigningAlg;

/// A secret setting: its `Debug` output is redacted so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of the service. Most flags may follow any command; the
/// server-wide defaults that a tenant can override (`--issuer`, `--audience`,
/// the lifetimes, code rules, sender, validation URLs, locale and limits) are
/// flags of the top-level command only (`latchkey --issuer … serve`), because
/// `tenant create|update` use the same flag names for a tenant's own values.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// Directory for the SQLite database, the dev mailbox and a generated
    /// key-encryption key.
    #[arg(
        long,
        env = "LATCHKEY_DATA_DIR",
        default_value = "latchkey-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Database URL: `postgres://…` or `sqlite://…`. Default: SQLite at
    /// `<data-dir>/latchkey.db`.
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<Secret>,

    /// Maximum database connections per process.
    #[arg(long, env = "LATCHKEY_DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub database_max_connections: u32,

    /// How long a call waits for a free database connection before failing
    /// with UNAVAILABLE.
    #[arg(long, env = "LATCHKEY_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub database_acquire_timeout: Duration,

    /// The longest one database statement may take: PostgreSQL cancels it
    /// then (`statement_timeout`), and every database call is abandoned a
    /// second later (its connection closed), so a connection that went
    /// silent fails the call with UNAVAILABLE instead of holding it.
    #[arg(long, env = "LATCHKEY_DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = duration, global = true)]
    pub database_statement_timeout: Duration,

    /// PostgreSQL ends a session of the service left inside a transaction
    /// this long (`idle_in_transaction_session_timeout`), releasing the rows
    /// it locked. `0s`: the server's own setting.
    #[arg(long, env = "LATCHKEY_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "10s", value_parser = duration_or_zero, global = true)]
    pub database_idle_in_transaction_timeout: Duration,

    /// Address of the gRPC listener.
    #[arg(
        long,
        env = "LATCHKEY_GRPC_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP listener: the JSON gateway, JWKS, health and
    /// OpenAPI document.
    #[arg(
        long,
        env = "LATCHKEY_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: SocketAddr,

    /// Prometheus `/metrics` listener. Kept off the gateway's listener: the
    /// numbers describe every tenant's traffic, so only the monitoring
    /// system should reach it.
    #[arg(
        long,
        env = "LATCHKEY_METRICS_ADDR",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    pub metrics_addr: SocketAddr,

    /// Origins allowed to call from a browser (CORS), comma-separated, for
    /// grpc-web and the JSON gateway; `*` for any. Empty (the default): no
    /// CORS headers at all.
    #[arg(
        long,
        env = "LATCHKEY_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_allowed_origins: Vec<String>,

    /// How long verifiers may cache `/.well-known/jwks.json` (Cache-Control
    /// max-age). Keep it shorter than the key activation delay.
    #[arg(long, env = "LATCHKEY_JWKS_MAX_AGE", default_value = "5m", value_parser = duration, global = true)]
    pub jwks_max_age: Duration,

    /// SMTP relay URL, e.g. `smtp://user:pass@relay:587?tls=required` (STARTTLS),
    /// `smtps://user:pass@relay:465` (implicit TLS) or `smtp://localhost:25`
    /// (plain). When unset, mail goes to the dev mailbox.
    #[arg(long, env = "LATCHKEY_SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<Secret>,

    /// Without LATCHKEY_SMTP_URL on a database other than the zero-setup
    /// SQLite one, use the dev mailbox anyway (emails written to
    /// `<data-dir>/mailbox`, codes logged): development only. Without this
    /// such a deployment refuses to start.
    #[arg(long, env = "LATCHKEY_DEV_MAILBOX", value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub dev_mailbox: bool,

    /// Timeout of connecting to the SMTP server and of each SMTP command.
    #[arg(long, env = "LATCHKEY_SMTP_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    pub smtp_timeout: Duration,

    /// How long to wait for the mail server's answer to the end of a message
    /// (it may be scanning it). Without an answer by then the message may or
    /// may not have been accepted: it is not sent again for ten minutes.
    #[arg(long, env = "LATCHKEY_SMTP_SEND_TIMEOUT", default_value = "30s", value_parser = duration, global = true)]
    pub smtp_send_timeout: Duration,

    /// Emails each process sends at once, each over its own SMTP connection
    /// (kept open for the next): raise it for a relay that is slow per
    /// message but takes many connections; keep it within the relay's limit
    /// of concurrent connections.
    #[arg(long, env = "LATCHKEY_SMTP_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub smtp_max_connections: u32,

    /// The sender of sign-in emails.
    #[arg(
        long,
        env = "LATCHKEY_MAIL_FROM",
        default_value = "latchkey <no-reply@latchkey.localhost>"
    )]
    pub mail_from: String,

    /// The application name shown in emails.
    #[arg(long, env = "LATCHKEY_APP_NAME", default_value = "latchkey")]
    pub app_name: String,

    /// How often the outbox is polled when nothing wakes the worker.
    #[arg(long, env = "LATCHKEY_OUTBOX_POLL_INTERVAL", default_value = "2s", value_parser = duration, global = true)]
    pub outbox_poll_interval: Duration,

    /// First retry delay after a failed send; doubles per attempt.
    #[arg(long, env = "LATCHKEY_OUTBOX_RETRY_BASE", default_value = "2s", value_parser = duration, global = true)]
    pub outbox_retry_base: Duration,

    /// Longest delay between two delivery attempts.
    #[arg(long, env = "LATCHKEY_OUTBOX_RETRY_MAX", default_value = "5m", value_parser = duration, global = true)]
    pub outbox_retry_max: Duration,

    /// How long a worker's claim on an email holds before another replica
    /// may take it. Renewed every third of it while the email is being
    /// sent, so a send may take longer; a replica that dies leaves its
    /// emails to the others after at most this long.
    #[arg(long, env = "LATCHKEY_OUTBOX_LEASE", default_value = "15s", value_parser = duration, global = true)]
    pub outbox_lease: Duration,

    /// Delivery attempts before a message is given up (marked dead).
    #[arg(long, env = "LATCHKEY_OUTBOX_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub outbox_max_attempts: u32,

    /// Where magic links may point, comma-separated: scheme, host and port
    /// must match exactly and the path must start with the entry's path.
    /// https only, except for localhost. A tenant's own list replaces this.
    #[arg(long, env = "LATCHKEY_ALLOWED_VALIDATION_URLS", value_delimiter = ',')]
    pub allowed_validation_urls: Vec<String>,

    /// The passkeys' relying-party id: the site's domain (`example.com`),
    /// which every passkey is bound to for good. `localhost` (the default)
    /// serves development pages on any `http://localhost` port; `off`
    /// turns passkeys off (PASSKEYS_NOT_CONFIGURED).
    #[arg(long, env = "LATCHKEY_PASSKEY_RP_ID", default_value = "localhost")]
    pub passkey_rp_id: String,

    /// The site name browsers show when creating a passkey (default: the
    /// app name).
    #[arg(long, env = "LATCHKEY_PASSKEY_RP_NAME")]
    pub passkey_rp_name: Option<String>,

    /// The origins whose pages may use passkeys, comma-separated
    /// (`https://app.example.com`), each within the relying-party id.
    /// Empty: `https://<relying-party id>` (for `localhost`: any
    /// `http://localhost` port).
    #[arg(long, env = "LATCHKEY_PASSKEY_ORIGINS", value_delimiter = ',')]
    pub passkey_origins: Vec<String>,

    /// The validation URL used when a StartAuth names none (must be allowed).
    #[arg(long, env = "LATCHKEY_DEFAULT_VALIDATION_URL")]
    pub default_validation_url: Option<String>,

    /// A directory of email templates overriding the built-in ones (same
    /// layout as `templates/`: `layout.html`, `<locale>/<name>`, and
    /// `tenants/<tenant id>/<locale>/<name>`). Checked at start-up.
    #[arg(long, env = "LATCHKEY_TEMPLATE_DIR", global = true)]
    pub template_dir: Option<PathBuf>,

    /// Language of emails when neither the request nor the tenant names one.
    #[arg(long, env = "LATCHKEY_DEFAULT_LOCALE", default_value = "en")]
    pub default_locale: String,

    /// The `iss` claim of access tokens.
    #[arg(long, env = "LATCHKEY_ISSUER", default_value = "latchkey")]
    pub issuer: String,

    /// The `aud` claim of access tokens.
    #[arg(long, env = "LATCHKEY_AUDIENCE", default_value = "latchkey")]
    pub audience: String,

    /// Algorithm of newly generated signing keys: EdDSA (Ed25519, fast and
    /// small), ES256 (ECDSA P-256) or RS256 (RSA 2048, for verifiers that
    /// know nothing else).
    #[arg(
        long,
        env = "LATCHKEY_SIGNING_ALG",
        default_value = "EdDSA",
        value_parser = signing_alg,
        global = true
    )]
    pub signing_alg: SigningAlg,

    /// Lifetime of access tokens.
    #[arg(long, env = "LATCHKEY_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = duration)]
    pub access_token_ttl: Duration,

    /// Absolute lifetime of a login session (refreshing does not extend it).
    #[arg(long, env = "LATCHKEY_SESSION_TTL", default_value = "30days", value_parser = duration)]
    pub session_ttl: Duration,

    /// How long after a refresh token's first use a retry with it still gets
    /// the same successor instead of ending the session.
    #[arg(long, env = "LATCHKEY_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = duration_or_zero, global = true)]
    pub refresh_reuse_grace: Duration,

    /// Number of digits in sign-in codes (6–10).
    #[arg(long, env = "LATCHKEY_CODE_LENGTH", default_value_t = 6,
          value_parser = clap::value_parser!(u8).range(6..=10))]
    pub code_length: u8,

    /// How long a sign-in code or link works, counted from when the mail
    /// server accepted the email.
    #[arg(long, env = "LATCHKEY_CODE_TTL", default_value = "10m", value_parser = duration)]
    pub code_ttl: Duration,

    /// However late the email goes out, a code or link never works longer
    /// than this after StartAuth.
    #[arg(long, env = "LATCHKEY_CODE_MAX_AGE", default_value = "30m", value_parser = duration, global = true)]
    pub code_max_age: Duration,

    /// Verification attempts per login session, the successful one included;
    /// after that many wrong codes the session ends.
    #[arg(long, env = "LATCHKEY_CODE_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub code_max_attempts: u32,

    /// Length of the rate-limit windows (sends per address, starts per IP).
    #[arg(long, env = "LATCHKEY_RATE_LIMIT_WINDOW", default_value = "15m", value_parser = duration, global = true)]
    pub rate_limit_window: Duration,

    /// Sign-in emails per address per window (StartAuth and ResendCode);
    /// 0: no limit.
    #[arg(long, env = "LATCHKEY_RATE_LIMIT_EMAIL", default_value_t = 5)]
    pub rate_limit_email: u32,

    /// StartAuth calls per client IP (`client.ip`) per window; 0: no limit.
    #[arg(long, env = "LATCHKEY_RATE_LIMIT_IP", default_value_t = 30)]
    pub rate_limit_ip: u32,

    /// Sign-in emails per tenant per minute, all addresses together; 0: no
    /// limit.
    #[arg(long, env = "LATCHKEY_RATE_LIMIT_TENANT", default_value_t = 1200)]
    pub rate_limit_tenant: u32,

    /// Wrong codes per address per hour, across all its logins, before
    /// further attempts back off exponentially; 0: no budget.
    #[arg(long, env = "LATCHKEY_VERIFY_FAILURE_BUDGET", default_value_t = 10)]
    pub verify_failure_budget: u32,

    /// The longest wait the failure backoff imposes between attempts.
    #[arg(long, env = "LATCHKEY_VERIFY_BACKOFF_MAX", default_value = "15m", value_parser = duration, global = true)]
    pub verify_backoff_max: Duration,

    /// Key-encryption key: 32 bytes, base64. Encrypts signing keys and queued
    /// mail at rest and keys the code hashes; every replica needs the same
    /// one. When unset, one is generated into `<data-dir>/kek` (development).
    #[arg(
        long,
        env = "LATCHKEY_KEY_ENCRYPTION_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key_encryption_key: Option<Secret>,

    /// How often each process reloads the signing keys from the database
    /// (picks up `latchkey keys rotate` run elsewhere).
    #[arg(long, env = "LATCHKEY_KEY_RELOAD_INTERVAL", default_value = "10s", value_parser = duration, global = true)]
    pub key_reload_interval: Duration,

    /// How often readiness re-checks that the database answers and is migrated.
    #[arg(long, env = "LATCHKEY_READINESS_INTERVAL", default_value = "5s", value_parser = duration, global = true)]
    pub readiness_interval: Duration,

    /// How long in-flight calls may take to finish after SIGTERM.
    #[arg(long, env = "LATCHKEY_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration, global = true)]
    pub shutdown_grace: Duration,

    /// After SIGTERM, how long to keep accepting new calls while reporting
    /// NOT_SERVING, so load balancers (Kubernetes endpoints) stop sending
    /// calls here before the listeners close. Then the grace begins.
    #[arg(long, env = "LATCHKEY_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration_or_zero, global = true)]
    pub shutdown_delay: Duration,

    /// HTTP/2 streams one connection may have open at a time, on the gRPC
    /// port and the gateway (SETTINGS_MAX_CONCURRENT_STREAMS); further
    /// streams wait for a free one.
    #[arg(long, env = "LATCHKEY_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub http2_max_concurrent_streams: u32,

    /// How often an HTTP/2 connection is pinged to check the peer is alive.
    #[arg(long, env = "LATCHKEY_HTTP2_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = duration, global = true)]
    pub http2_keepalive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[arg(long, env = "LATCHKEY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = duration, global = true)]
    pub http2_keepalive_timeout: Duration,

    /// gRPC port: open connections at most; more wait to be accepted.
    #[arg(long, env = "LATCHKEY_GRPC_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub grpc_max_connections: u32,

    /// Gateway: how long a client has to send a request's headers, counted
    /// from the connection (or the previous response on a kept-alive one).
    #[arg(long, env = "LATCHKEY_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration, global = true)]
    pub http_header_read_timeout: Duration,

    /// Gateway: how long a request may take once its headers are in, body
    /// included; then it is answered 408 and its connection closed.
    #[arg(long, env = "LATCHKEY_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration, global = true)]
    pub http_request_timeout: Duration,

    /// Gateway: open connections at most; more wait to be accepted.
    #[arg(long, env = "LATCHKEY_HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub http_max_connections: u32,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `latchkey=debug`.
    #[arg(long, env = "LATCHKEY_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log line format.
    #[arg(
        long,
        env = "LATCHKEY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

impl Settings {
    /// The defaults, as `cargo run` with no flags and no environment sees them
    /// (environment variables are ignored here).
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        // Parse from an empty command line without reading LATCHKEY_* variables.
        let cmd = <Only as clap::CommandFactory>::command();
        let cmd = cmd.mut_args(|arg| arg.env(None::<&str>));
        let matches = cmd.get_matches_from(["latchkey"]);
        <Only as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("defaults parse")
            .settings
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("latchkey.db").display()
            ),
        }
    }
}

/// A signing algorithm by its JOSE name (any case).
pub(crate) fn signing_alg(s: &str) -> Result<SigningAlg, String> {
    SigningAlg::ALL
        .iter()
        .copied()
        .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("{s:?} is not one of EdDSA, ES256, RS256"))
}

/// Parses a positive human duration such as `15m`, `10s` or `30days`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let d = duration_or_zero(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

pub(crate) fn duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 10s, 15m, 30days)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;

    #[test]
    fn defaults_are_valid_and_use_sqlite_in_the_data_dir() {
        let s = Settings::defaults();
        s.validate().unwrap();
        assert_eq!(
            s.database_url(),
            "sqlite://latchkey-data/latchkey.db?mode=rwc"
        );
        assert_eq!(s.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.code_length, 6);
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn code_length_outside_six_to_ten_is_refused() {
        for bad in ["5", "11", "six"] {
            let err = Cli::try_parse_from(["latchkey", "--code-length", bad]).unwrap_err();
            assert!(err.to_string().contains("--code-length"), "{err}");
        }
    }

    #[test]
    fn access_token_ttl_longer_than_session_is_refused_naming_the_setting() {
        let mut s = Settings::defaults();
        s.access_token_ttl = Duration::from_secs(7200);
        s.session_ttl = Duration::from_secs(3600);
        let err = s.validate().unwrap_err();
        assert!(
            err.to_string().contains("LATCHKEY_ACCESS_TOKEN_TTL"),
            "{err}"
        );
    }

    #[test]
    fn rate_limit_window_and_backoff_cap_are_bounded() {
        let mut s = Settings::defaults();
        s.rate_limit_window = Duration::from_millis(10);
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("LATCHKEY_RATE_LIMIT_WINDOW")
        );
        s.rate_limit_window = Duration::from_secs(900);
        s.verify_backoff_max = Duration::ZERO;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("LATCHKEY_VERIFY_BACKOFF_MAX")
        );
    }

    #[test]
    fn the_readme_documents_every_setting() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let mut cmd = Cli::command();
        let mut envs: Vec<String> = Vec::new();
        let mut collect = |c: &clap::Command| {
            for arg in c.get_arguments() {
                if let Some(env) = arg.get_env() {
                    envs.push(env.to_string_lossy().into_owned());
                }
            }
        };
        collect(&cmd);
        for sub in cmd.get_subcommands_mut() {
            for subsub in sub.get_subcommands() {
                collect(subsub);
            }
        }
        assert!(envs.len() > 20);
        for env in envs {
            assert!(readme.contains(&format!("`{env}`")), "README misses {env}");
        }
    }

    #[test]
    fn dev_mailbox_flag_reads_true_and_false_from_the_environment() {
        let cli = |args: &[&str]| Cli::try_parse_from(args).unwrap().settings.dev_mailbox;
        assert!(!cli(&["latchkey"]));
        assert!(cli(&["latchkey", "--dev-mailbox"]));
        assert!(!Settings::defaults().dev_mailbox);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut s = Settings::defaults();
        s.smtp_url = Some(Secret::new("smtp://user:hunter2@relay"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
