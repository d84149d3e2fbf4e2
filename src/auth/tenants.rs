//! Tenants: one deployment serves several apps, each with its own users,
//! sessions and settings. A tenant's settings override the server defaults;
//! each process keeps every tenant's effective [`Policy`] in memory and
//! reloads them when another process changes one (a change counter in the
//! database, polled every second).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde::{Deserialize, Serialize};

use super::Policy;
pub use super::settings::{SETTING_NAMES, TenantSettings};
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

impl std::str::FromStr for SignupPolicy {
    type Err = String;
    /// The spelling of the CLI: `login-or-create` or `login-only`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "login-or-create" => Ok(Self::LoginOrCreate),
            "login-only" => Ok(Self::LoginOnly),
            _ => Err("expected `login-or-create` or `login-only`".into()),
        }
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
    use std::time::Duration;

    use super::*;

    fn defaults() -> Policy {
        Policy::for_tests()
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
