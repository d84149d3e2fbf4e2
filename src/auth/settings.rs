//! A tenant's settings: every setting a tenant can override, declared once.
//!
//! [`with_tenant_settings!`] holds the one table: name, type, kind, CLI flag,
//! description and rule of each setting. Each consumer expands it in its own
//! way: [`TenantSettings`] with its names, merge, clear and `apply` (here),
//! the `tenant create|update` flags (`crate::cli`), and the AdminService
//! conversions (`crate::api::admin`). Adding a setting is one row here (plus
//! its field in `admin.proto`, which a test keeps equal to the table).
//!
//! A row's rule checks a tenant's value (ranges, formats) and writes it into
//! the [`Policy`]; the checks between settings come after every row, in
//! [`TenantSettings::apply`]. The server defaults (`LATCHKEY_*`) go through
//! the same format checks ([`check_text`], [`check_mailbox`],
//! [`check_app_name`], [`check_locale`], the allowlist) when the default
//! policy is built, with their own numeric ranges: an operator may set, say,
//! a 4-second code lifetime for a test deployment, an admin key may not.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Policy;
use crate::error::AuthError;

/// The table of tenant settings; calls `$callback!` with every row:
///
/// `/// doc` `name: Type as kind = "cli-flag" => rule;`
///
/// `kind` tells the transports how to read a value: `text`, `seconds` (a
/// whole number of seconds; the CLI reads a duration like `10m`), `number`,
/// `flag` (a boolean), `list` (repeatable), `choice` (an enum).
macro_rules! with_tenant_settings {
    ($callback:ident) => {
        $callback! {
            /// `iss` of this tenant's access tokens.
            issuer: String as text = "issuer" => |p, v| {
                $crate::auth::settings::check_text(v, 512)?;
                p.issuer = v.clone();
                Ok(())
            };
            /// `aud` of this tenant's access tokens.
            audience: String as text = "audience" => |p, v| {
                $crate::auth::settings::check_text(v, 512)?;
                p.audience = v.clone();
                Ok(())
            };
            /// Access-token lifetime, 60 to 86400 seconds.
            access_token_ttl_seconds: u32 as seconds = "access-token-ttl" => |p, v| {
                $crate::auth::settings::check_range(*v, 60, 86_400)?;
                p.access_token_ttl = $crate::auth::settings::seconds(*v);
                Ok(())
            };
            /// Absolute login-session lifetime, at least 60 seconds.
            session_ttl_seconds: u32 as seconds = "session-ttl" => |p, v| {
                if *v < 60 {
                    return Err("must be at least 60".into());
                }
                p.session_ttl = $crate::auth::settings::seconds(*v);
                Ok(())
            };
            /// Digits per sign-in code, 6 to 10.
            code_length: u8 as number = "code-length" => |p, v| {
                $crate::auth::settings::check_range(*v, 6, 10)?;
                p.code_length = *v;
                Ok(())
            };
            /// How long a code works, 60 to 3600 seconds.
            code_ttl_seconds: u32 as seconds = "code-ttl" => |p, v| {
                $crate::auth::settings::check_range(*v, 60, 3_600)?;
                p.code_ttl = $crate::auth::settings::seconds(*v);
                Ok(())
            };
            /// Verification attempts per login session, 1 to 20.
            code_max_attempts: u32 as number = "code-max-attempts" => |p, v| {
                $crate::auth::settings::check_range(*v, 1, 20)?;
                p.code_max_attempts = *v;
                Ok(())
            };
            /// Sender of this tenant's emails, e.g. `Acme <login@acme.example>`.
            mail_from: String as text = "mail-from" => |p, v| {
                $crate::auth::settings::check_mailbox(v)?;
                p.mail_from = v.clone();
                Ok(())
            };
            /// The app name shown in this tenant's emails.
            app_name: String as text = "app-name" => |p, v| {
                $crate::auth::settings::check_app_name(v)?;
                p.app_name = v.clone();
                Ok(())
            };
            /// Where this tenant's magic links may point (repeatable; replaces
            /// the list).
            allowed_validation_urls: Vec<String> as list = "allowed-validation-url" => |p, v| {
                if v.len() > 50 {
                    return Err("at most 50 entries".into());
                }
                p.allowed_validation_urls = $crate::auth::links::Allowlist::parse(v)?;
                Ok(())
            };
            /// Language of emails when a request names none (e.g. `en`, `de`).
            default_locale: String as text = "default-locale" => |p, v| {
                $crate::auth::settings::check_locale(v)?;
                p.default_locale = v.clone();
                Ok(())
            };
            /// Who may sign in: `login-or-create` (the default) or
            /// `login-only`.
            signup_policy: $crate::auth::tenants::SignupPolicy as choice = "signup-policy" => |p, v| {
                p.signup_policy = *v;
                Ok(())
            };
            /// With login-only: email a "no account" notice to unknown
            /// addresses (default: send nothing).
            notify_unknown_address: bool as flag = "notify-unknown-address" => |p, v| {
                p.notify_unknown_address = *v;
                Ok(())
            };
            /// The validation URL for a StartAuth that names none (must be
            /// allowed).
            default_validation_url: String as text = "default-validation-url" => |p, v| {
                p.default_validation_url = Some(v.clone());
                Ok(())
            };
            /// Sign-in emails per address per rate-limit window (0: no limit).
            rate_limit_email: u32 as number = "rate-limit-email" => |p, v| {
                p.limits.per_email = $crate::auth::settings::check_limit(*v)?;
                Ok(())
            };
            /// StartAuth calls per client IP per window (0: no limit).
            rate_limit_ip: u32 as number = "rate-limit-ip" => |p, v| {
                p.limits.per_ip = $crate::auth::settings::check_limit(*v)?;
                Ok(())
            };
            /// Sign-in emails for the whole tenant per minute (0: no limit).
            rate_limit_tenant: u32 as number = "rate-limit-tenant" => |p, v| {
                p.limits.per_tenant_minute = $crate::auth::settings::check_limit(*v)?;
                Ok(())
            };
            /// Wrong codes per address per hour before attempts back off (0:
            /// no budget).
            verify_failure_budget: u32 as number = "verify-failure-budget" => |p, v| {
                p.limits.failure_budget = $crate::auth::settings::check_limit(*v)?;
                Ok(())
            };
            /// The passkeys' relying-party id: the site's domain (e.g.
            /// `example.com`), which every passkey is bound to for good.
            passkey_rp_id: String as text = "passkey-rp-id" => |p, v| {
                p.passkeys.rp_id = Some($crate::auth::passkeys::check_rp_id(v)?);
                Ok(())
            };
            /// The site name browsers show when creating a passkey
            /// (default: the app name).
            passkey_rp_name: String as text = "passkey-rp-name" => |p, v| {
                $crate::auth::settings::check_app_name(v)?;
                p.passkeys.rp_name = Some(v.clone());
                Ok(())
            };
            /// The origins (e.g. `https://app.example.com`) whose pages may
            /// use passkeys, each within the relying-party id (repeatable;
            /// replaces the list).
            passkey_origins: Vec<String> as list = "passkey-origin" => |p, v| {
                p.passkeys.origins = $crate::auth::passkeys::check_origins(v)?;
                Ok(())
            };
            /// Claims every access token of this tenant carries in its
            /// `app_metadata` claim: a JSON object of at most 2 KB (a user's
            /// own metadata wins over a key of the same name).
            static_claims: String as text = "static-claims" => |p, v| {
                p.static_claims = $crate::auth::users::parse_metadata(v)?;
                Ok(())
            };
        }
    };
}
pub(crate) use with_tenant_settings;

/// A rule: checks one setting's value and writes it into the policy, or
/// says what is wrong with it.
type Rule<T> = fn(&mut Policy, &T) -> Result<(), String>;

macro_rules! define_tenant_settings {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty as $kind:ident = $flag:literal => $rule:expr;)+) => {
        /// A tenant's overrides of the server defaults; absent fields inherit
        /// them. Stored as JSON in `tenants.settings`.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TenantSettings {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )+
        }

        /// The setting names, as the admin surface spells them (for `clear`),
        /// in the order they apply.
        pub const SETTING_NAMES: &[&str] = &[$(stringify!($name)),+];

        impl TenantSettings {
            /// `self` with every field `other` sets replaced.
            pub fn merged(&self, other: &TenantSettings) -> TenantSettings {
                TenantSettings {
                    $($name: other.$name.clone().or_else(|| self.$name.clone()),)+
                }
            }

            /// Resets the named setting to the server default.
            pub fn clear(&mut self, name: &str) -> Result<(), AuthError> {
                match name {
                    $(stringify!($name) => self.$name = None,)+
                    _ => {
                        return Err(AuthError::invalid(
                            "clear_settings",
                            format!("unknown setting {name:?}"),
                        ));
                    }
                }
                Ok(())
            }

            /// Each set value's rule, in table order, onto `p`; the error names
            /// the setting at fault.
            fn apply_rows(&self, p: &mut Policy) -> Result<(), AuthError> {
                $(
                    if let Some(v) = &self.$name {
                        let rule: Rule<$ty> = $rule;
                        rule(p, v).map_err(|reason| {
                            AuthError::invalid(concat!("settings.", stringify!($name)), reason)
                        })?;
                    }
                )+
                Ok(())
            }
        }
    };
}

with_tenant_settings!(define_tenant_settings);

impl TenantSettings {
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
            .iter()
            .copied()
            .filter(|name| {
                let only = self.only(name);
                only != TenantSettings::default()
                    && only.apply(defaults).is_ok_and(|p| p == *defaults)
            })
            .collect()
    }

    /// Each setting on its own onto `defaults`, skipping those that fail;
    /// the access-token lifetime is capped at the session's.
    pub(super) fn apply_each(&self, defaults: &Policy) -> Policy {
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
        self.apply_rows(&mut p)?;
        if p.access_token_ttl > p.session_ttl {
            return Err(AuthError::invalid(
                "settings.access_token_ttl_seconds",
                "must not be longer than the session lifetime",
            ));
        }
        if let Err(reason) = p.passkeys.check() {
            return Err(AuthError::invalid("settings.passkey_origins", reason));
        }
        if let Some(url) = &p.default_validation_url
            && !p.allowed_validation_urls.permits(url)
        {
            return Err(AuthError::invalid(
                "settings.default_validation_url",
                "must be one of the allowed validation URLs",
            ));
        }
        Ok(p)
    }
}

/// Whole seconds as a lifetime.
pub fn seconds(v: u32) -> Duration {
    Duration::from_secs(u64::from(v))
}

/// A number within `min..=max`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(v: T, min: T, max: T) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(())
}

/// A rate limit: at most a million (0: no limit).
pub fn check_limit(v: u32) -> Result<u32, String> {
    if v > 1_000_000 {
        return Err("must be at most 1000000 (0: no limit)".into());
    }
    Ok(v)
}

/// Text that is not blank and at most `max` bytes (issuer, audience).
pub fn check_text(v: &str, max: usize) -> Result<(), String> {
    if v.trim().is_empty() || v.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    Ok(())
}

/// A sender mailbox as the mail transport writes it into `From:`.
pub fn check_mailbox(v: &str) -> Result<(), String> {
    if v.parse::<lettre::message::Mailbox>().is_err() {
        return Err("must be a mailbox like `Acme <login@acme.example>`".into());
    }
    Ok(())
}

/// An app name shown in emails: 1 to 100 characters, no control characters.
pub fn check_app_name(v: &str) -> Result<(), String> {
    if v.trim().is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters, no control characters".into());
    }
    Ok(())
}

/// A language tag like `en` or `pt-BR`.
pub fn check_locale(v: &str) -> Result<(), String> {
    if !super::links::is_locale(v) {
        return Err("must be a language tag like `en` or `pt-BR`".into());
    }
    Ok(())
}
