//! Administration: tenants, API keys and users. The command line and the
//! gRPC AdminService both call these functions; every change bumps a counter
//! so every replica reloads its in-memory copy within a second.

use std::sync::Arc;

use super::{
    DEFAULT_TENANT, User,
    apikeys::{self, ApiKeys, Scope},
    keys::KeyRings,
    tenants::{SETTING_NAMES, Tenant, TenantSettings, Tenants, effective_policy},
    users::Users,
};
use crate::{
    clock::{Clock, UnixMillis},
    error::AuthError,
    store::{ApiKeyRow, Store},
};

/// An API key as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub prefix: String,
    pub tenant_id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
}

impl ApiKeyInfo {
    /// `revoked`, `expired` or `active` at `now`.
    pub fn state(&self, now: UnixMillis) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A key just made: its text is shown once, here.
pub struct CreatedKey {
    pub info: ApiKeyInfo,
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("info", &self.info)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The admin operations. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    store: Store,
    tenants: Tenants,
    api_keys: Option<ApiKeys>,
    signing_keys: Option<KeyRings>,
    users: Users,
    clock: Clock,
}

/// A running server's in-memory state the admin operations keep current at
/// once (the command line has none: servers catch up within a second).
pub struct Live {
    pub api_keys: ApiKeys,
    pub signing_keys: KeyRings,
}

impl Admin {
    pub fn new(store: Store, tenants: Tenants, live: Option<Live>, clock: Clock) -> Self {
        let (api_keys, signing_keys) = match live {
            Some(Live {
                api_keys,
                signing_keys,
            }) => (Some(api_keys), Some(signing_keys)),
            None => (None, None),
        };
        Self {
            users: Users::new(store.clone(), clock.clone()),
            store,
            tenants,
            api_keys,
            signing_keys,
            clock,
        }
    }

    async fn reload(&self) -> Result<(), AuthError> {
        self.tenants.reload().await?;
        if let Some(keys) = &self.api_keys {
            keys.reload().await?;
        }
        Ok(())
    }

    pub async fn create_tenant(
        &self,
        id: &str,
        name: &str,
        settings: TenantSettings,
    ) -> Result<Arc<Tenant>, AuthError> {
        let id = if id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            validate_tenant_id(id)?;
            id.to_owned()
        };
        let name = validate_name("name", name)?;
        effective_policy(&id, &settings, self.tenants.defaults())?;
        let json = serde_json::to_string(&settings).expect("settings serialise");
        if !self
            .store
            .insert_tenant(&id, name, &json, self.clock.now_ms())
            .await?
        {
            return Err(AuthError::AlreadyExists(format!(
                "a tenant with id {id:?} exists"
            )));
        }
        self.reload().await?;
        // Its first signing key, so its JWKS is there before its first login.
        if let Some(keys) = &self.signing_keys {
            keys.ring(&id).await.map_err(AuthError::Internal)?;
        }
        self.tenant(&id)
    }

    /// The server defaults tenants inherit.
    pub fn defaults(&self) -> &super::Policy {
        self.tenants.defaults()
    }

    pub fn tenant(&self, id: &str) -> Result<Arc<Tenant>, AuthError> {
        self.tenants.get(id).ok_or(AuthError::NotFound("tenant"))
    }

    pub async fn list_tenants(&self) -> Result<Vec<Arc<Tenant>>, AuthError> {
        self.tenants.reload().await?;
        Ok(self.tenants.all())
    }

    /// Renames and/or changes settings: `set` overrides the settings it
    /// names, `clear` resets settings to the server defaults.
    pub async fn update_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        set: &TenantSettings,
        clear: &[String],
    ) -> Result<Arc<Tenant>, AuthError> {
        // Read, change and write under the tenant's row lock: two concurrent
        // updates of different settings both take effect.
        let defaults = self.tenants.defaults().clone();
        let changed = self
            .store
            .modify_tenant(id, self.clock.now_ms(), |row| {
                let current: TenantSettings =
                    serde_json::from_str(&row.settings).unwrap_or_default();
                let name = match name {
                    Some(n) => validate_name("name", n)?.to_owned(),
                    None => row.name.clone(),
                };
                let mut settings = current.merged(set);
                for setting in clear {
                    settings.clear(setting)?;
                }
                effective_policy(id, &settings, &defaults)?;
                let json = serde_json::to_string(&settings).expect("settings serialise");
                Ok::<_, AuthError>((name, json))
            })
            .await?;
        if changed.is_none() {
            return Err(AuthError::NotFound("tenant"));
        }
        self.reload().await?;
        self.tenant(id)
    }

    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        scope: Scope,
        expires_at: Option<UnixMillis>,
    ) -> Result<CreatedKey, AuthError> {
        self.tenants.reload().await?;
        self.tenant(tenant_id)?;
        let name = validate_name("name", name)?;
        let now = self.clock.now_ms();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::invalid("expires_at", "must be in the future"));
        }
        let key = apikeys::generate(scope);
        let row = ApiKeyRow {
            prefix: key.prefix.clone(),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            scope: scope.as_str().to_owned(),
            secret_hash: key.hash.to_vec(),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        self.store.insert_api_key(&row).await?;
        self.reload().await?;
        Ok(CreatedKey {
            info: info(row).expect("a known scope"),
            key: key.text,
        })
    }

    /// Keys of one tenant, or of all tenants.
    pub async fn list_api_keys(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Vec<ApiKeyInfo>, AuthError> {
        Ok(self
            .store
            .all_api_keys()
            .await?
            .into_iter()
            .filter(|k| tenant_id.is_none_or(|t| t == k.tenant_id))
            .filter_map(info)
            .collect())
    }

    /// Revokes a key by its prefix (idempotent for a known key).
    pub async fn revoke_api_key(&self, prefix: &str) -> Result<(), AuthError> {
        match self
            .store
            .revoke_api_key(prefix, self.clock.now_ms())
            .await?
        {
            None => Err(AuthError::NotFound("API key")),
            Some(_) => self.reload().await,
        }
    }

    /// The user operations, for any tenant that exists.
    pub fn users(&self, tenant_id: &str) -> Result<&Users, AuthError> {
        self.tenant(tenant_id)?;
        Ok(&self.users)
    }

    /// A user by id or by address.
    pub async fn find_user(
        &self,
        tenant_id: &str,
        id: &str,
        email: &str,
    ) -> Result<User, AuthError> {
        fn given(s: &str) -> Option<&str> {
            Some(s).filter(|s| !s.trim().is_empty())
        }
        self.users(tenant_id)?
            .get(tenant_id, given(id), given(email))
            .await
    }

    /// Deletes a user and everything of theirs; every session ends at once
    /// (their refresh tokens stop working).
    pub async fn delete_user(&self, tenant_id: &str, user_id: &str) -> Result<(), AuthError> {
        self.users(tenant_id)?.delete(tenant_id, user_id).await
    }
}

/// The development key of a fresh, unconfigured deployment: when no key
/// exists at all, one app key for the default tenant. Returns its text (to
/// show once), or `None` when keys exist.
pub async fn create_development_key(admin: &Admin) -> Result<Option<String>, AuthError> {
    if admin.store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let created = admin
        .create_api_key(DEFAULT_TENANT, "development", Scope::App, None)
        .await?;
    Ok(Some(created.key))
}

fn info(row: ApiKeyRow) -> Option<ApiKeyInfo> {
    Some(ApiKeyInfo {
        scope: Scope::parse(&row.scope)?,
        prefix: row.prefix,
        tenant_id: row.tenant_id,
        name: row.name,
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
    })
}

/// Tenant ids: 1 to 63 of `a-z 0-9 -`, not starting with `-` (they appear in
/// tokens as `tid`).
fn validate_tenant_id(id: &str) -> Result<(), AuthError> {
    let ok = (1..=63).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::invalid(
            "tenant_id",
            "must be 1 to 63 of a-z, 0-9 and -, not starting with -",
        ))
    }
}

fn validate_name<'a>(field: &'static str, name: &'a str) -> Result<&'a str, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            field,
            "must be 1 to 200 characters, no control characters",
        ));
    }
    Ok(name)
}

/// For `clear_settings` validation messages.
pub fn setting_names() -> &'static [&'static str] {
    SETTING_NAMES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_slugs() {
        for ok in ["default", "shop", "app-2", "a"] {
            validate_tenant_id(ok).unwrap();
        }
        for bad in ["", "Shop", "-x", "a b", "a_b", &"x".repeat(64)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad:?}");
        }
    }
}
