//! The checks of the settings, and the policy every tenant starts from.

use std::time::Duration;

use super::Settings;
use crate::auth::{Policy, tenants::SignupPolicy};

/// The `LATCHKEY_PASSKEY_RP_ID` that turns passkeys off.
pub const PASSKEYS_OFF: &str = "off";

impl Settings {
    /// The server defaults as the policy every tenant starts from.
    pub fn default_policy(&self) -> Policy {
        let s = self;
        Policy {
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            access_token_ttl: s.access_token_ttl,
            session_ttl: s.session_ttl,
            refresh_reuse_grace: s.refresh_reuse_grace,
            code_length: s.code_length,
            code_ttl: s.code_ttl,
            code_max_age: s.code_max_age,
            code_max_attempts: s.code_max_attempts,
            mail_from: s.mail_from.clone(),
            app_name: s.app_name.clone(),
            // (Checked by Settings::validate.)
            allowed_validation_urls: crate::auth::links::Allowlist::parse(
                &s.allowed_validation_urls,
            )
            .unwrap_or_default(),
            default_validation_url: s.default_validation_url.clone(),
            default_locale: s.default_locale.clone(),
            signup_policy: SignupPolicy::LoginOrCreate,
            notify_unknown_address: false,
            limits: crate::auth::limits::Limits {
                window: s.rate_limit_window,
                per_email: s.rate_limit_email,
                per_ip: s.rate_limit_ip,
                per_tenant_minute: s.rate_limit_tenant,
                failure_budget: s.verify_failure_budget,
                backoff_max: s.verify_backoff_max,
            },
            // (Checked by Settings::validate.)
            passkeys: crate::auth::passkeys::PasskeyPolicy {
                rp_id: (s.passkey_rp_id != PASSKEYS_OFF).then(|| s.passkey_rp_id.clone()),
                rp_name: s.passkey_rp_name.clone(),
                origins: crate::auth::passkeys::check_origins(&s.passkey_origins)
                    .unwrap_or_default(),
            },
            static_claims: serde_json::Map::new(),
        }
    }
}

impl Settings {
    /// Checks the relations between settings that flags alone cannot express.
    /// The error names the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting: &'static str, reason: String| Err(ConfigError { setting, reason });
        // The format checks a tenant's own values get (auth::settings);
        // the numeric ranges of server defaults are the flags' own.
        use crate::auth::settings::{check_app_name, check_locale, check_mailbox, check_text};
        let check = |setting: &'static str, result: Result<(), String>| {
            result.map_err(|reason| ConfigError { setting, reason })
        };
        check("LATCHKEY_ISSUER (--issuer)", check_text(&self.issuer, 512))?;
        check(
            "LATCHKEY_AUDIENCE (--audience)",
            check_text(&self.audience, 512),
        )?;
        check(
            "LATCHKEY_APP_NAME (--app-name)",
            check_app_name(&self.app_name),
        )?;
        if self.access_token_ttl > self.session_ttl {
            return fail(
                "LATCHKEY_ACCESS_TOKEN_TTL (--access-token-ttl)",
                "must not be longer than LATCHKEY_SESSION_TTL".into(),
            );
        }
        if self.access_token_ttl > Duration::from_secs(24 * 3600) {
            return fail(
                "LATCHKEY_ACCESS_TOKEN_TTL (--access-token-ttl)",
                "must be at most 24h: access tokens cannot be revoked before they expire".into(),
            );
        }
        for origin in &self.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').contains(char::is_whitespace)
                    && http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return fail(
                    "LATCHKEY_CORS_ALLOWED_ORIGINS (--cors-allowed-origins)",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                );
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600))
            .contains(&self.rate_limit_window)
        {
            return fail(
                "LATCHKEY_RATE_LIMIT_WINDOW (--rate-limit-window)",
                "must be between 1s and 24h".into(),
            );
        }
        if self.verify_backoff_max < Duration::from_secs(1) {
            return fail(
                "LATCHKEY_VERIFY_BACKOFF_MAX (--verify-backoff-max)",
                "must be at least 1s".into(),
            );
        }
        if self.code_max_age < self.code_ttl {
            return fail(
                "LATCHKEY_CODE_MAX_AGE (--code-max-age)",
                "must not be shorter than LATCHKEY_CODE_TTL".into(),
            );
        }
        if self.smtp_send_timeout < self.smtp_timeout {
            return fail(
                "LATCHKEY_SMTP_SEND_TIMEOUT (--smtp-send-timeout)",
                "must not be shorter than LATCHKEY_SMTP_TIMEOUT".into(),
            );
        }
        for url in &self.allowed_validation_urls {
            if let Err(reason) = crate::auth::links::AllowedUrl::parse(url) {
                return fail(
                    "LATCHKEY_ALLOWED_VALIDATION_URLS (--allowed-validation-urls)",
                    format!("{url:?}: {reason}"),
                );
            }
        }
        if let Some(url) = &self.default_validation_url {
            let allowed = crate::auth::links::Allowlist::parse(&self.allowed_validation_urls)
                .map_err(|e| ConfigError {
                    setting: "LATCHKEY_ALLOWED_VALIDATION_URLS (--allowed-validation-urls)",
                    reason: e,
                })?;
            if !allowed.permits(url) {
                return fail(
                    "LATCHKEY_DEFAULT_VALIDATION_URL (--default-validation-url)",
                    "is not in LATCHKEY_ALLOWED_VALIDATION_URLS".into(),
                );
            }
        }
        if self.passkey_rp_id != PASSKEYS_OFF {
            check(
                "LATCHKEY_PASSKEY_RP_ID (--passkey-rp-id)",
                crate::auth::passkeys::check_rp_id(&self.passkey_rp_id).map(drop),
            )?;
        }
        if let Some(name) = &self.passkey_rp_name {
            check(
                "LATCHKEY_PASSKEY_RP_NAME (--passkey-rp-name)",
                check_app_name(name),
            )?;
        }
        let origins = "LATCHKEY_PASSKEY_ORIGINS (--passkey-origins)";
        check(
            origins,
            crate::auth::passkeys::check_origins(&self.passkey_origins).map(drop),
        )?;
        check(origins, self.default_policy().passkeys.check())?;
        check(
            "LATCHKEY_DEFAULT_LOCALE (--default-locale)",
            check_locale(&self.default_locale),
        )?;
        if self.outbox_lease < Duration::from_secs(1) {
            return fail(
                "LATCHKEY_OUTBOX_LEASE (--outbox-lease)",
                "must be at least 1s".into(),
            );
        }
        if self.outbox_retry_base > self.outbox_retry_max {
            return fail(
                "LATCHKEY_OUTBOX_RETRY_BASE (--outbox-retry-base)",
                "must not be longer than LATCHKEY_OUTBOX_RETRY_MAX".into(),
            );
        }
        check(
            "LATCHKEY_MAIL_FROM (--mail-from)",
            check_mailbox(&self.mail_from),
        )?;
        let url = self.database_url();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return fail(
                "LATCHKEY_DATABASE_URL (--database-url)",
                "must start with postgres://, postgresql:// or sqlite:".into(),
            );
        }
        if let Some(smtp) = &self.smtp_url {
            let s = smtp.expose();
            if !(s.starts_with("smtp://") || s.starts_with("smtps://")) {
                return fail(
                    "LATCHKEY_SMTP_URL (--smtp-url)",
                    "must start with smtp:// or smtps://".into(),
                );
            }
        }
        Ok(())
    }
}

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}
