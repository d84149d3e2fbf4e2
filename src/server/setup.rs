//! What serving needs before it starts: the store, the key-encryption key,
//! the data directory, the development key, CORS.

use std::time::Duration;

use anyhow::Context;

use crate::{
    config::Settings,
    kek::{Kek, KekSource},
    store::{Store, StoreOptions},
};

/// Opens the store named by the settings and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.database_url();
    let options = StoreOptions {
        max_connections: settings.database_max_connections,
        acquire_timeout: settings.database_acquire_timeout,
        statement_timeout: settings.database_statement_timeout,
        idle_in_transaction_timeout: settings.database_idle_in_transaction_timeout,
    };
    let store = Store::connect(&url, &options)
        .await
        .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?;
    store
        .migrate(crate::auth::email::canonical)
        .await
        .context("applying database migrations")?;
    Ok(store)
}

/// The dev mailbox (codes in the log, no email sent) is the zero-setup
/// default on the embedded SQLite database only: anywhere else a missing
/// LATCHKEY_SMTP_URL is a mistake unless LATCHKEY_DEV_MAILBOX says otherwise.
pub(super) fn refuse_silent_dev_mailbox(settings: &Settings) -> anyhow::Result<()> {
    if settings.smtp_url.is_none()
        && !settings.dev_mailbox
        && !settings.database_url().starts_with("sqlite:")
    {
        anyhow::bail!(
            "no LATCHKEY_SMTP_URL configured for a PostgreSQL deployment: set LATCHKEY_SMTP_URL \
             to your mail relay (e.g. smtps://user:pass@relay.example.com:465), or \
             LATCHKEY_DEV_MAILBOX=true to write emails to the development mailbox and log their \
             codes (development only)"
        );
    }
    Ok(())
}

/// Loads (or on first start generates) the key-encryption key, warning when
/// it is not configured.
pub fn load_kek(settings: &Settings) -> anyhow::Result<Kek> {
    let configured = settings.key_encryption_key.as_ref().map(|s| s.expose());
    let (kek, source) = Kek::load(configured, &settings.data_dir)
        .context("LATCHKEY_KEY_ENCRYPTION_KEY (--key-encryption-key)")?;
    match source {
        KekSource::Configured => {}
        KekSource::GeneratedFile | KekSource::ExistingFile => tracing::warn!(
            path = %settings.data_dir.join("kek").display(),
            "no LATCHKEY_KEY_ENCRYPTION_KEY configured: using a key from the data directory. \
             Fine for development; in production configure one shared by every replica"
        ),
    }
    Ok(kek)
}

/// Makes an existing data directory private (see [`crate::files`]),
/// logging every change.
pub(super) fn tighten_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let changed = crate::files::tighten_data_dir(dir)
        .with_context(|| format!("restricting access to {}", dir.display()))?;
    for change in changed {
        tracing::warn!(
            path = %change.path.display(),
            from = %format!("{:04o}", change.from),
            to = %format!("{:04o}", change.to),
            "removed group and other access from a data file"
        );
    }
    Ok(())
}

/// The longest one SMTP send can take: connecting, the session set-up, MAIL,
/// RCPT and DATA within the SMTP timeout each, and the answer to the end of
/// the message within the send timeout.
pub(super) fn smtp_send_bound(settings: &Settings) -> Duration {
    settings.smtp_timeout * 5 + settings.smtp_send_timeout
}

/// CORS for browsers (grpc-web and the gateway), only when origins are set.
pub(super) fn cors_layer(
    origins: &[String],
) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| http::HeaderValue::from_str(o.trim_end_matches('/')))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let headers = [
        "content-type",
        "authorization",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "if-none-match",
        "idempotency-key",
        "traceparent",
        "tracestate",
    ]
    .map(http::HeaderName::from_static);
    let exposed = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "etag",
    ]
    .map(http::HeaderName::from_static);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
            .allow_headers(headers)
            .expose_headers(exposed)
            .max_age(Duration::from_secs(600)),
    ))
}

/// Keeps the development key in `<data-dir>/dev-api-key` (mode 0600) and
/// shows it once on the terminal (never in the log); without a terminal only
/// the file's path is logged.
pub(super) fn announce_development_key(settings: &Settings, key: &str) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let path = settings.data_dir.join("dev-api-key");
    crate::files::create_private_dir(&settings.data_dir)?;
    let mut file = crate::files::create_private_file(&path)?;
    writeln!(file, "{key}")?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "\nDEVELOPMENT API KEY (shown once; also in {path}):\n\n  {key}\n\n\
             Try it:\n  curl -s {http}/auth/start -H \"authorization: Bearer $(cat {path})\" \\\n    \
             -H 'content-type: application/json' -d '{{\"email\":\"you@example.com\"}}'\n",
            path = path.display(),
            http = settings.http_addr,
        );
    }
    tracing::warn!(
        file = %path.display(),
        "created a development API key (no keys existed): use it as `authorization: Bearer <key>`"
    );
    Ok(())
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/latchkey"),
            "postgres://app:***@db:5432/latchkey"
        );
        assert_eq!(
            redact_url("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}
