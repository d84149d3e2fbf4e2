//! A tenant's rules: the server defaults and what its settings change.

use std::time::Duration;

use super::{limits, links, tenants::SignupPolicy};

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
    /// Copied into every access token's `app_metadata` claim, under the
    /// user's own metadata.
    pub static_claims: serde_json::Map<String, serde_json::Value>,
}
