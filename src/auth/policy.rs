//! A tenant's rules: the server defaults and what its settings change.

use std::time::Duration;

use super::{limits, links, tenants::SignupPolicy};
use crate::config::Settings;

/// The rules a tenant's logins follow: the server defaults, overridden by
/// the tenant's settings ([`tenants::TenantSettings::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub session_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub code_length: u8,
    pub code_ttl: Duration,
    /// However late the email goes out, a proof never works longer than
    /// this after StartAuth.
    pub code_max_age: Duration,
    pub code_max_attempts: u32,
    pub mail_from: String,
    pub app_name: String,
    pub allowed_validation_urls: links::Allowlist,
    pub default_validation_url: Option<String>,
    pub default_locale: String,
    pub signup_policy: SignupPolicy,
    pub notify_unknown_address: bool,
    pub limits: limits::Limits,
}

impl Policy {
    /// The server defaults.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
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
            allowed_validation_urls: links::Allowlist::parse(&s.allowed_validation_urls)
                .unwrap_or_default(),
            default_validation_url: s.default_validation_url.clone(),
            default_locale: s.default_locale.clone(),
            signup_policy: SignupPolicy::LoginOrCreate,
            notify_unknown_address: false,
            limits: limits::Limits {
                window: s.rate_limit_window,
                per_email: s.rate_limit_email,
                per_ip: s.rate_limit_ip,
                per_tenant_minute: s.rate_limit_tenant,
                failure_budget: s.verify_failure_budget,
                backoff_max: s.verify_backoff_max,
            },
        }
    }
}
