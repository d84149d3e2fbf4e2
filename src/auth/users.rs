//! Users: the one place every change to a user is made (metadata, disabled,
//! enabled, deleted), each in one transaction, and the rule that puts their
//! metadata into access tokens.
//!
//! Disabling a user ends every login of theirs in the same transaction; from
//! then on StartAuth for their address answers as for any address but sends
//! nothing (the session's email is suppressed in the store, see
//! `Tx::insert_session`), Verify and Refresh refuse with USER_DISABLED.

use base64::Engine;
use serde_json::{Map, Value};

use super::{User, email::EmailAddress, input::parse_uuid};
use crate::{
    clock::{Clock, UnixMillis},
    error::AuthError,
    store::{SessionEnd, Store, UserQuery, UserRow},
};

/// The largest `app_metadata` (and tenant `static_claims`), serialised.
pub const MAX_METADATA_BYTES: usize = 2048;
/// The name of the one access-token claim that carries app data.
pub const METADATA_CLAIM: &str = "app_metadata";
/// ListUsers' page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page ListUsers returns (a larger request gets this many).
pub const MAX_PAGE_SIZE: u32 = 500;

/// Checks app data: a JSON object of at most [`MAX_METADATA_BYTES`] once
/// serialised compactly. Returns it parsed, or what is wrong.
pub fn parse_metadata(text: &str) -> Result<Map<String, Value>, String> {
    // (Whitespace does not count, but a huge text is not parsed at all.)
    if text.len() > 8 * MAX_METADATA_BYTES {
        return Err(format!("must be at most {MAX_METADATA_BYTES} bytes"));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("must be a JSON object".into());
    };
    if serde_json::to_string(&map).map_or(usize::MAX, |s| s.len()) > MAX_METADATA_BYTES {
        return Err(format!("must be at most {MAX_METADATA_BYTES} bytes"));
    }
    Ok(map)
}

/// The value of the [`METADATA_CLAIM`]: the tenant's static claims, each
/// key replaced by the user's own metadata where both have it (the user's
/// wins). `None` when both are empty (the token then has no such claim).
pub fn token_claim(tenant: &Map<String, Value>, user: Option<&str>) -> Option<Map<String, Value>> {
    let user = user.filter(|u| *u != "{}" && !u.is_empty());
    if tenant.is_empty() && user.is_none() {
        return None;
    }
    let mut claim = tenant.clone();
    if let Some(text) = user {
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(own) => claim.extend(own),
            // (Stored only after parse_metadata: unreachable but for a
            // hand-edited row; the token then carries the tenant's part.)
            Err(e) => tracing::error!(error = %e, "unreadable stored app_metadata"),
        }
    }
    (!claim.is_empty()).then_some(claim)
}

/// Which users ListUsers returns.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Addresses starting with this (lower-cased; a whole address in its
    /// canonical form).
    pub email_prefix: Option<String>,
    /// Created at or after.
    pub created_from: Option<UnixMillis>,
    /// Created before.
    pub created_before: Option<UnixMillis>,
    /// 0: [`DEFAULT_PAGE_SIZE`]; at most [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Where the previous page ended (its `next_page_token`).
    pub page_token: Option<String>,
}

/// A page of users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// The user operations, over the store. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    store: Store,
    clock: Clock,
}

impl Users {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// A user by id, or else by address. Another tenant's user is not
    /// found, as a missing one.
    pub async fn get(
        &self,
        tenant_id: &str,
        id: Option<&str>,
        email: Option<&str>,
    ) -> Result<User, AuthError> {
        let row = match (id, email) {
            (Some(id), _) => {
                let id = parse_uuid(id, "user_id")?;
                self.store.user_by_id(tenant_id, &id).await?
            }
            (None, Some(email)) => {
                let email = EmailAddress::parse(email)?;
                self.store.user_by_email(tenant_id, email.as_str()).await?
            }
            (None, None) => return Err(AuthError::invalid("user_id", "give user_id or email")),
        };
        row.map(User::from).ok_or(AuthError::NotFound("user"))
    }

    /// A page of a tenant's users, oldest first (ties by id): a stable
    /// order, so paging never skips or repeats a user.
    pub async fn list(&self, tenant_id: &str, filter: &UserFilter) -> Result<UserPage, AuthError> {
        let prefix = filter
            .email_prefix
            .as_deref()
            .map(canonical_prefix)
            .transpose()?;
        if let (Some(from), Some(before)) = (filter.created_from, filter.created_before)
            && from >= before
        {
            return Err(AuthError::invalid(
                "created_before",
                "must be later than created_after",
            ));
        }
        let after = filter.page_token.as_deref().map(decode_token).transpose()?;
        let size = match filter.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let query = UserQuery {
            email_prefix: prefix.as_deref(),
            created_from: filter.created_from,
            created_before: filter.created_before,
            after: after.as_ref().map(|(at, id)| (*at, id.as_str())),
            // One more than the page: whether another page follows.
            limit: i64::from(size) + 1,
        };
        let mut rows = self.store.list_users(tenant_id, &query).await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = rows
            .last()
            .filter(|_| more)
            .map(|last| encode_token(last.created_at, &last.id));
        Ok(UserPage {
            users: rows.into_iter().map(User::from).collect(),
            next_page_token,
        })
    }

    /// Replaces a user's metadata (a JSON object; `{}` clears it). Tokens
    /// issued from now on carry it.
    pub async fn update_metadata(
        &self,
        tenant_id: &str,
        id: &str,
        app_metadata: &str,
    ) -> Result<User, AuthError> {
        let id = parse_uuid(id, "user_id")?;
        let parsed =
            parse_metadata(app_metadata).map_err(|e| AuthError::invalid("app_metadata", e))?;
        let compact = serde_json::to_string(&parsed).expect("a JSON object serialises");
        let mut tx = self.store.begin().await?;
        let row = tx
            .set_user_metadata(tenant_id, &id, &compact, self.clock.now_ms())
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Disables a user and ends every login of theirs (active sessions and
    /// pending logins), in one transaction. Idempotent. Returns the user
    /// and how many logins ended.
    pub async fn disable(&self, tenant_id: &str, id: &str) -> Result<(User, u64), AuthError> {
        let id = parse_uuid(id, "user_id")?;
        let now = self.clock.now_ms();
        let mut tx = self.store.begin().await?;
        let row = tx
            .set_user_disabled(tenant_id, &id, true, now)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        let ended = tx
            .end_every_login_of_user(tenant_id, &row, SessionEnd::UserDisabled, now)
            .await?;
        tx.commit().await?;
        tracing::info!(user_id = %row.id, ended, "user disabled");
        Ok((row.into(), ended))
    }

    /// Lets a disabled user log in again (the sessions that disabling ended
    /// stay ended). Idempotent.
    pub async fn enable(&self, tenant_id: &str, id: &str) -> Result<User, AuthError> {
        let id = parse_uuid(id, "user_id")?;
        let mut tx = self.store.begin().await?;
        let row = tx
            .set_user_disabled(tenant_id, &id, false, self.clock.now_ms())
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        tx.commit().await?;
        tracing::info!(user_id = %row.id, "user enabled");
        Ok(row.into())
    }

    /// Deletes a user and every trace of their address (see
    /// `Tx::delete_user`), in one transaction.
    pub async fn delete(&self, tenant_id: &str, id: &str) -> Result<(), AuthError> {
        let id = parse_uuid(id, "user_id")?;
        let mut tx = self.store.begin().await?;
        if !tx.delete_user(tenant_id, &id).await? {
            return Err(AuthError::NotFound("user"));
        }
        tx.commit().await?;
        tracing::info!(user_id = %id, "user deleted");
        Ok(())
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            created_at: row.created_at,
            updated_at: row.updated_at,
            disabled_at: row.disabled_at,
            app_metadata: row.app_metadata,
        }
    }
}

/// An email prefix as stored addresses start: lower-cased, and a whole
/// address in its canonical form.
fn canonical_prefix(prefix: &str) -> Result<String, AuthError> {
    let prefix = prefix.trim();
    if prefix.len() > super::email::MAX_EMAIL_LEN || prefix.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "email_prefix",
            "must be at most 254 characters, no control characters",
        ));
    }
    Ok(match EmailAddress::parse(prefix) {
        Ok(address) => address.as_str().to_owned(),
        Err(_) => prefix.to_lowercase(),
    })
}

/// A page token: where the previous page ended, `(created_at, id)`, opaque
/// to callers.
fn encode_token(created_at: UnixMillis, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

fn decode_token(token: &str) -> Result<(UnixMillis, String), AuthError> {
    let bad = || AuthError::invalid("page_token", "is not a page token of this listing");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once('.').ok_or_else(bad)?;
    let at = at.parse::<UnixMillis>().map_err(|_| bad())?;
    let id = parse_uuid(id, "page_token").map_err(|_| bad())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_a_small_json_object() {
        assert_eq!(
            parse_metadata(r#" { "plan" : "pro" } "#).unwrap()["plan"],
            "pro"
        );
        assert!(parse_metadata("{}").unwrap().is_empty());
        for (bad, why) in [
            ("[1]", "object"),
            ("\"x\"", "object"),
            ("null", "object"),
            ("{", "JSON"),
            ("", "JSON"),
        ] {
            let e = parse_metadata(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // 2048 bytes compact passes, 2049 does not; whitespace is free.
        let fill = |n: usize| format!(r#"{{"k":"{}"}}"#, "x".repeat(n - 8));
        assert_eq!(fill(2048).len(), 2048);
        assert!(parse_metadata(&fill(2048)).is_ok());
        assert!(parse_metadata(&fill(2049)).unwrap_err().contains("2048"));
        let spaced = format!("{}{}", " ".repeat(3000), fill(2048));
        assert!(parse_metadata(&spaced).is_ok());
    }

    #[test]
    fn the_claim_merges_tenant_and_user_and_the_user_wins() {
        let tenant = parse_metadata(r#"{"org":"acme","plan":"free"}"#).unwrap();
        let merged = token_claim(&tenant, Some(r#"{"plan":"pro","seat":3}"#)).unwrap();
        assert_eq!(
            Value::Object(merged),
            serde_json::json!({"org":"acme","plan":"pro","seat":3})
        );
        assert_eq!(token_claim(&Map::new(), Some("{}")), None);
        assert_eq!(token_claim(&Map::new(), None), None);
        assert_eq!(token_claim(&tenant, Some("{}")), Some(tenant.clone()));
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let id = "019ab5a3-0000-7000-8000-000000000001";
        let token = encode_token(1_700_000_000_123, id);
        assert_eq!(
            decode_token(&token).unwrap(),
            (1_700_000_000_123, id.to_owned())
        );
        for bad in ["", "!!", "bm90IGEgdG9rZW4", &encode_token(1, "not-a-uuid")] {
            assert_eq!(decode_token(bad).unwrap_err().field(), Some("page_token"));
        }
    }

    #[test]
    fn prefixes_are_compared_in_the_stored_form() {
        assert_eq!(canonical_prefix(" Ada@Ex").unwrap(), "ada@ex");
        assert_eq!(
            canonical_prefix("ADA@EXAMPLE.COM").unwrap(),
            "ada@example.com"
        );
        assert!(canonical_prefix("a\u{0}b").is_err());
    }
}
