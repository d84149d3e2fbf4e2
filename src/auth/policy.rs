//! A tenant's rules: the server defaults and what its settings change.

use std::time::Duration;

use super::{limits, links, passkeys::PasskeyPolicy, tenants::SignupPolicy};

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
    pub passkeys: PasskeyPolicy,
    /// Copied into every access token's `app_metadata` claim, under the
    /// user's own metadata.
    pub static_claims: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
impl Policy {
    /// A valid policy for the domain's unit tests (the values of the
    /// documented server defaults), built without the `config` layer.
    pub fn for_tests() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Policy {
            issuer: "latchkey".into(),
            audience: "latchkey".into(),
            access_token_ttl: minutes(15),
            session_ttl: minutes(60 * 24 * 30),
            refresh_reuse_grace: Duration::from_secs(10),
            code_length: 6,
            code_ttl: minutes(10),
            code_max_age: minutes(30),
            code_max_attempts: 5,
            mail_from: "latchkey <no-reply@latchkey.localhost>".into(),
            app_name: "latchkey".into(),
            allowed_validation_urls: links::Allowlist::default(),
            default_validation_url: None,
            default_locale: "en".into(),
            signup_policy: SignupPolicy::LoginOrCreate,
            notify_unknown_address: false,
            limits: limits::Limits {
                window: minutes(15),
                per_email: 5,
                per_ip: 30,
                per_tenant_minute: 1200,
                failure_budget: 10,
                backoff_max: minutes(15),
            },
            passkeys: super::passkeys::PasskeyPolicy {
                rp_id: Some("localhost".into()),
                rp_name: None,
                origins: Vec::new(),
            },
            static_claims: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Policy;

    #[test]
    fn the_test_policy_is_the_server_default_policy() {
        // The one place a domain test reaches for the config layer: so the
        // fixture cannot drift from what `latchkey serve` really uses.
        assert_eq!(
            crate::config::Settings::defaults().default_policy(),
            Policy::for_tests()
        );
    }
}
