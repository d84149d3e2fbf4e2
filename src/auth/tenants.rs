//! Tenants: one deployment serves several apps, each with its own users,
//! sessions and settings. A tenant's settings override the server defaults;
//! each process keeps every tenant's effective [`Policy`] in memory and
//! reloads them when another process changes one (a change counter in the
//! database, polled every second).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{Policy, links::Allowlist};
use crate::{
    clock::UnixMillis,
    error::AuthError,
    store::{Store, TenantRow},
};

/// Whether an unknown address may sign up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignupPolicy {
    /// The first successful login creates the user (the default).
    #[default]
    LoginOrCreate,
    /// Only existing users can log in. An unknown address gets the same
    /// answer as a known one, and no sign-in email.
    LoginOnly,
}

/// A tenant's overrides of the server defaults; absent fields inherit them.
/// Stored as JSON in `tenants.settings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ttl_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_length: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_ttl_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_max_attempts: Option<u32>,
    /// Sender of this tenant's emails, e.g. `Acme <login@acme.example>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,
    /// The app name shown in this tenant's emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Where this tenant's magic links may point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_validation_urls: Option<Vec<String>>,
    /// Language of emails when a request names none (e.g. `en`, `de`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signup_policy: Option<SignupPolicy>,
    /// With login-only: email a "no account" notice to unknown addresses
    /// (default: send nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_unknown_address: Option<bool>,
    /// The validation URL for a StartAuth that names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_validation_url: Option<String>,
    /// Sign-in emails per address per window (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_email: Option<u32>,
    /// StartAuth calls per client IP per window (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_ip: Option<u32>,
    /// Sign-in emails for the tenant per minute (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_tenant: Option<u32>,
    /// Wrong codes per address per hour before backoff (0: no budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_failure_budget: Option<u32>,
}

/// The setting names, as the admin surface spells them (for `clear`).
pub const SETTING_NAMES: [&str; 18] = [
    "issuer",
    "audience",
    "access_token_ttl_seconds",
    "session_ttl_seconds",
    "code_length",
    "code_ttl_seconds",
    "code_max_attempts",
    "mail_from",
    "app_name",
    "allowed_validation_urls",
    "default_locale",
    "signup_policy",
    "notify_unknown_address",
    "default_validation_url",
    "rate_limit_email",
    "rate_limit_ip",
    "rate_limit_tenant",
    "verify_failure_budget",
];

impl TenantSettings {
    /// `self` with every field `other` sets replaced.
    pub fn merged(&self, other: &TenantSettings) -> TenantSettings {
        macro_rules! pick {
            ($($f:ident),*) => { TenantSettings { $($f: other.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
            issuer,
            audience,
            access_token_ttl_seconds,
            session_ttl_seconds,
            code_length,
            code_ttl_seconds,
            code_max_attempts,
            mail_from,
            app_name,
            allowed_validation_urls,
            default_locale,
            signup_policy,
            notify_unknown_address,
            default_validation_url,
            rate_limit_email,
            rate_limit_ip,
            rate_limit_tenant,
            verify_failure_budget
        )
    }

    /// Resets the named setting to the server default.
    pub fn clear(&mut self, name: &str) -> Result<(), AuthError> {
        match name {
            "issuer" => self.issuer = None,
            "audience" => self.audience = None,
            "access_token_ttl_seconds" => self.access_token_ttl_seconds = None,
            "session_ttl_seconds" => self.session_ttl_seconds = None,
            "code_length" => self.code_length = None,
            "code_ttl_seconds" => self.code_ttl_seconds = None,
            "code_max_attempts" => self.code_max_attempts = None,
            "mail_from" => self.mail_from = None,
            "app_name" => self.app_name = None,
            "allowed_validation_urls" => self.allowed_validation_urls = None,
            "default_locale" => self.default_locale = None,
            "signup_policy" => self.signup_policy = None,
            "notify_unknown_address" => self.notify_unknown_address = None,
            "default_validation_url" => self.default_validation_url = None,
            "rate_limit_email" => self.rate_limit_email = None,
            "rate_limit_ip" => self.rate_limit_ip = None,
            "rate_limit_tenant" => self.rate_limit_tenant = None,
            "verify_failure_budget" => self.verify_failure_budget = None,
            _ => {
                return Err(AuthError::invalid(
                    "clear_settings",
                    format!("unknown setting {name:?}"),
                ));
            }
        }
        Ok(())
    }

    /// These settings but the one named.
    fn only(&self, name: &str) -> TenantSettings {
        let mut only = self.clone();
        for other in SETTING_NAMES.iter().filter(|n| **n != name) {
            only.clear(other).expect("a known setting");
        }
        only
    }

    /// The settings that are set but change nothing: each, on its own,
    /// leaves `defaults` as they are.
    pub fn repeating_defaults(&self, defaults: &Policy) -> Vec<&'static str> {
        SETTING_NAMES
            .into_iter()
            .filter(|name| {
                let only = self.only(name);
                only != TenantSettings::default()
                    && only.apply(defaults).is_ok_and(|p| p == *defaults)
            })
            .collect()
    }

    /// Each setting on its own onto `defaults`, skipping those that fail;
    /// the access-token lifetime is capped at the session's.
    fn apply_each(&self, defaults: &Policy) -> Policy {
        let mut policy = defaults.clone();
        for name in SETTING_NAMES {
            if let Ok(p) = self.only(name).apply(&policy) {
                policy = p;
            }
        }
        policy.access_token_ttl = policy.access_token_ttl.min(policy.session_ttl);
        policy
    }

    /// The effective policy: `defaults` overridden by these settings, checked
    /// as a whole (the error names the setting at fault).
    pub fn apply(&self, defaults: &Policy) -> Result<Policy, AuthError> {
        let mut p = defaults.clone();
        let bad = |field: &'static str, reason: &str| Err(AuthError::invalid(field, reason));
        if let Some(v) = &self.issuer {
            if v.trim().is_empty() || v.len() > 512 {
                return bad("settings.issuer", "must be 1 to 512 characters");
            }
            p.issuer = v.clone();
        }
        if let Some(v) = &self.audience {
            if v.trim().is_empty() || v.len() > 512 {
                return bad("settings.audience", "must be 1 to 512 characters");
            }
            p.audience = v.clone();
        }
        let seconds = |v: u32| Duration::from_secs(u64::from(v));
        if let Some(v) = self.access_token_ttl_seconds {
            if !(60..=86_400).contains(&v) {
                return bad(
                    "settings.access_token_ttl_seconds",
                    "must be between 60 and 86400",
                );
            }
            p.access_token_ttl = seconds(v);
        }
        if let Some(v) = self.session_ttl_seconds {
            if v < 60 {
                return bad("settings.session_ttl_seconds", "must be at least 60");
            }
            p.session_ttl = seconds(v);
        }
        if p.access_token_ttl > p.session_ttl {
            return bad(
                "settings.access_token_ttl_seconds",
                "must not be longer than the session lifetime",
            );
        }
        if let Some(v) = self.code_length {
            if !(6..=10).contains(&v) {
                return bad("settings.code_length", "must be between 6 and 10");
            }
            p.code_length = v;
        }
        if let Some(v) = self.code_ttl_seconds {
            if !(60..=3_600).contains(&v) {
                return bad("settings.code_ttl_seconds", "must be between 60 and 3600");
            }
            p.code_ttl = seconds(v);
        }
        if let Some(v) = self.code_max_attempts {
            if !(1..=20).contains(&v) {
                return bad("settings.code_max_attempts", "must be between 1 and 20");
            }
            p.code_max_attempts = v;
        }
        if let Some(v) = &self.mail_from {
            if v.parse::<lettre::message::Mailbox>().is_err() {
                return bad(
                    "settings.mail_from",
                    "must be a mailbox like `Acme <login@acme.example>`",
                );
            }
            p.mail_from = v.clone();
        }
        if let Some(v) = &self.app_name {
            if v.trim().is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
                return bad(
                    "settings.app_name",
                    "must be 1 to 100 characters, no control characters",
                );
            }
            p.app_name = v.clone();
        }
        if let Some(urls) = &self.allowed_validation_urls {
            if urls.len() > 50 {
                return bad("settings.allowed_validation_urls", "at most 50 entries");
            }
            p.allowed_validation_urls = Allowlist::parse(urls)
                .map_err(|e| AuthError::invalid("settings.allowed_validation_urls", e))?;
        }
        if let Some(url) = &self.default_validation_url {
            p.default_validation_url = Some(url.clone());
        }
        if let Some(url) = &p.default_validation_url
            && !p.allowed_validation_urls.permits(url)
        {
            return bad(
                "settings.default_validation_url",
                "must be one of the allowed validation URLs",
            );
        }
        if let Some(v) = &self.default_locale {
            if !super::links::is_locale(v) {
                return bad(
                    "settings.default_locale",
                    "must be a language tag like `en` or `pt-BR`",
                );
            }
            p.default_locale = v.clone();
        }
        if let Some(v) = self.signup_policy {
            p.signup_policy = v;
        }
        for (value, target, field) in [
            (
                self.rate_limit_email,
                &mut p.limits.per_email,
                "settings.rate_limit_email",
            ),
            (
                self.rate_limit_ip,
                &mut p.limits.per_ip,
                "settings.rate_limit_ip",
            ),
            (
                self.rate_limit_tenant,
                &mut p.limits.per_tenant_minute,
                "settings.rate_limit_tenant",
            ),
            (
                self.verify_failure_budget,
                &mut p.limits.failure_budget,
                "settings.verify_failure_budget",
            ),
        ] {
            if let Some(v) = value {
                if v > 1_000_000 {
                    return bad(field, "must be at most 1000000 (0: no limit)");
                }
                *target = v;
            }
        }
        if let Some(v) = self.notify_unknown_address {
            p.notify_unknown_address = v;
        }
        Ok(p)
    }
}

/// A tenant as the domain uses it: who, and the rules its logins follow.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub settings: TenantSettings,
    pub policy: Policy,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Tenant {
    /// Builds a tenant from its row. Settings that no longer validate (say,
    /// after a server default changed) fall back to the defaults, loudly.
    pub fn from_row(row: TenantRow, defaults: &Policy) -> Self {
        let settings: TenantSettings = serde_json::from_str(&row.settings).unwrap_or_else(|e| {
            tracing::error!(tenant = %row.id, error = %e, "unreadable tenant settings: using defaults");
            TenantSettings::default()
        });
        let defaults = tenant_defaults(&row.id, defaults);
        let policy = settings.apply(&defaults).unwrap_or_else(|e| {
            // (A server default changed under them.) Keep every setting that
            // still holds on its own, so a login-only tenant never opens up
            // and tokens keep their audience.
            tracing::error!(tenant = %row.id, error = %e, "invalid tenant settings: keeping the ones that still apply");
            settings.apply_each(&defaults)
        });
        Self {
            id: row.id,
            name: row.name,
            settings,
            policy,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The server defaults as one tenant sees them: a tenant other than the
/// default one gets its id as its default audience, so one app's tokens are
/// never accepted by another app's backend by accident.
fn tenant_defaults(tenant_id: &str, defaults: &Policy) -> Policy {
    let mut p = defaults.clone();
    if tenant_id != super::DEFAULT_TENANT {
        p.audience = tenant_id.to_owned();
    }
    p
}

/// The server defaults for `tenant_id`, then `settings`, validated.
pub fn effective_policy(
    tenant_id: &str,
    settings: &TenantSettings,
    defaults: &Policy,
) -> Result<Policy, AuthError> {
    settings.apply(&tenant_defaults(tenant_id, defaults))
}

type TenantMap = Arc<HashMap<String, Arc<Tenant>>>;

/// Every tenant, in memory. Cheap to clone.
#[derive(Clone)]
pub struct Tenants {
    store: Store,
    defaults: Arc<Policy>,
    by_id: Arc<RwLock<TenantMap>>,
    /// Reloads run one at a time, so a slow one can never put back an older
    /// picture after a newer one was installed.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl Tenants {
    pub async fn load(store: Store, defaults: Policy) -> Result<Self, AuthError> {
        let tenants = Self {
            store,
            defaults: Arc::new(defaults),
            by_id: Arc::default(),
            reloading: Arc::default(),
        };
        tenants.reload().await?;
        Ok(tenants)
    }

    pub fn defaults(&self) -> &Policy {
        &self.defaults
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.by_id.read().expect("tenants lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self
            .by_id
            .read()
            .expect("tenants lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Re-reads every tenant.
    pub async fn reload(&self) -> Result<(), AuthError> {
        let _one_at_a_time = self.reloading.lock().await;
        let rows = self.store.all_tenants().await?;
        let map = rows
            .into_iter()
            .map(|row| {
                let tenant = Tenant::from_row(row, &self.defaults);
                (tenant.id.clone(), Arc::new(tenant))
            })
            .collect();
        *self.by_id.write().expect("tenants lock") = Arc::new(map);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Policy {
        Policy::from_settings(&crate::config::Settings::defaults())
    }

    #[test]
    fn settings_override_only_what_they_set() {
        let s = TenantSettings {
            audience: Some("shop".into()),
            code_length: Some(8),
            signup_policy: Some(SignupPolicy::LoginOnly),
            ..Default::default()
        };
        let p = s.apply(&defaults()).unwrap();
        assert_eq!(p.audience, "shop");
        assert_eq!(p.code_length, 8);
        assert_eq!(p.signup_policy, SignupPolicy::LoginOnly);
        assert_eq!(p.issuer, defaults().issuer);
        assert_eq!(p.access_token_ttl, defaults().access_token_ttl);
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let cases = [
            (
                TenantSettings {
                    code_length: Some(5),
                    ..Default::default()
                },
                "settings.code_length",
            ),
            (
                TenantSettings {
                    mail_from: Some("nope".into()),
                    ..Default::default()
                },
                "settings.mail_from",
            ),
            (
                TenantSettings {
                    access_token_ttl_seconds: Some(7200),
                    session_ttl_seconds: Some(3600),
                    ..Default::default()
                },
                "settings.access_token_ttl_seconds",
            ),
            (
                TenantSettings {
                    allowed_validation_urls: Some(vec!["javascript:alert(1)".into()]),
                    ..Default::default()
                },
                "settings.allowed_validation_urls",
            ),
        ];
        for (settings, field) in cases {
            assert_eq!(
                settings.apply(&defaults()).unwrap_err().field(),
                Some(field)
            );
        }
    }

    #[test]
    fn settings_that_no_longer_validate_keep_what_still_holds() {
        let s = TenantSettings {
            signup_policy: Some(SignupPolicy::LoginOnly),
            audience: Some("shop".into()),
            access_token_ttl_seconds: Some(7200),
            ..Default::default()
        };
        // The server's sessions became shorter than the tenant's tokens.
        let mut d = defaults();
        d.session_ttl = Duration::from_secs(1800);
        assert!(s.apply(&d).is_err());
        let p = s.apply_each(&d);
        assert_eq!(p.signup_policy, SignupPolicy::LoginOnly);
        assert_eq!(p.audience, "shop");
        assert!(p.access_token_ttl <= p.session_ttl);
    }

    #[test]
    fn other_tenants_default_to_their_own_audience() {
        let none = TenantSettings::default();
        assert_eq!(
            effective_policy("default", &none, &defaults())
                .unwrap()
                .audience,
            defaults().audience
        );
        assert_eq!(
            effective_policy("shop", &none, &defaults())
                .unwrap()
                .audience,
            "shop"
        );
    }

    #[test]
    fn merge_and_clear_work_per_setting() {
        let base = TenantSettings {
            issuer: Some("a".into()),
            code_length: Some(7),
            ..Default::default()
        };
        let update = TenantSettings {
            code_length: Some(9),
            ..Default::default()
        };
        let mut merged = base.merged(&update);
        assert_eq!(merged.issuer.as_deref(), Some("a"));
        assert_eq!(merged.code_length, Some(9));
        merged.clear("issuer").unwrap();
        assert_eq!(merged.issuer, None);
        assert!(merged.clear("colour").is_err());
        for name in SETTING_NAMES {
            merged.clear(name).unwrap();
        }
        assert_eq!(merged, TenantSettings::default());
    }

    #[test]
    fn settings_round_trip_through_json_and_refuse_unknown_keys() {
        let s = TenantSettings {
            signup_policy: Some(SignupPolicy::LoginOnly),
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"signup_policy":"login_only"}"#);
        assert_eq!(serde_json::from_str::<TenantSettings>(&json).unwrap(), s);
        assert!(serde_json::from_str::<TenantSettings>(r#"{"colour":"red"}"#).is_err());
    }
}
