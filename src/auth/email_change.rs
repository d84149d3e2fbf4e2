//! Change of address: StartEmailChange sends a code and/or link to the new
//! address (a login like StartAuth's, with the same limits and canonical
//! form, marked with the user it changes); Verify of that login moves the
//! user to the new address, keeps their id, logs them in there and queues a
//! notice to the old address, all in the transaction that checks the proof.

use std::time::Duration;

use super::{AuthService, email, input::parse_uuid, payload, tenants::Tenant};
use crate::{
    clock::{UnixMillis, millis},
    error::AuthError,
    store::{MailKind, NewMail, SessionEnd, Tx, UserRow},
};

/// How long the notice to the old address is retried before it is dropped.
const NOTICE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl AuthService {
    /// The user a StartEmailChange is for, checked before anything is
    /// written: theirs to change (an enabled user of the tenant), to an
    /// address that is new and no other user's. Returns their id.
    pub(super) async fn email_change_target(
        &self,
        tenant: &Tenant,
        user_id: &str,
        new_email: &str,
    ) -> Result<String, AuthError> {
        let store = &self.inner.store;
        let id = parse_uuid(user_id, "user_id")?;
        let user = store
            .user_by_id(&tenant.id, &id)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        if user.disabled_at.is_some() {
            return Err(AuthError::UserDisabled);
        }
        if user.email == new_email {
            return Err(AuthError::invalid(
                "new_email",
                "is already the user's address",
            ));
        }
        if store.user_by_email(&tenant.id, new_email).await?.is_some() {
            return Err(address_taken());
        }
        Ok(id)
    }

    /// Moves `user_id` to `new_email` (whose proof was just checked, in
    /// `tx`) and queues the notice to their old address. A user who is gone
    /// or disabled, or an address another user took meanwhile, ends the
    /// login (its proof used up) and commits that alone, answering why.
    pub(super) async fn change_email_in(
        &self,
        tx: &mut Tx,
        tenant: &Tenant,
        user_id: &str,
        new_email: &str,
        now: UnixMillis,
    ) -> Result<UserRow, Refused> {
        let refuse = |error| Refused {
            error,
            end: Some(SessionEnd::Revoked),
        };
        let Some(old) = tx.user_by_id(&tenant.id, user_id).await? else {
            return Err(refuse(AuthError::CodeInvalid));
        };
        if old.disabled_at.is_some() {
            return Err(Refused {
                error: AuthError::UserDisabled,
                end: Some(SessionEnd::UserDisabled),
            });
        }
        if tx
            .find_user(&tenant.id, new_email)
            .await?
            .is_some_and(|other| other.id != old.id)
        {
            return Err(refuse(address_taken()));
        }
        let user = tx
            .set_user_email(&tenant.id, user_id, new_email, now)
            .await?
            .ok_or_else(|| refuse(AuthError::CodeInvalid))?;
        self.queue_email_changed_notice(tx, tenant, &old.email, new_email, now)
            .await?;
        tracing::info!(user_id = %user.id, "email address changed");
        Ok(user)
    }

    /// Queues "your sign-in address was changed" to the old address (the
    /// new one masked), in the caller's transaction.
    async fn queue_email_changed_notice(
        &self,
        tx: &mut Tx,
        tenant: &Tenant,
        old_email: &str,
        new_email: &str,
        now: UnixMillis,
    ) -> Result<(), AuthError> {
        let inner = &self.inner;
        let mail_id = uuid::Uuid::now_v7().to_string();
        let until = now + millis(NOTICE_TTL);
        let sealed = payload::seal(
            &inner.kek,
            &mail_id,
            &payload::SignInPayload {
                code: None,
                link: None,
                expires_at: until,
                extend_until: until,
                locale: tenant.policy.default_locale.clone(),
                new_email: Some(email::mask(new_email)),
            },
        );
        tx.enqueue_mail(&NewMail {
            id: &mail_id,
            tenant_id: &tenant.id,
            session_id: None,
            kind: MailKind::EmailChanged,
            recipient: old_email,
            payload_sealed: Some(sealed.as_slice()),
            created_at: now,
            deliver: true,
            notify: self.should_notify_replicas(now),
        })
        .await?;
        Ok(())
    }
}

/// A refused change of address: the answer, and how the login ends.
pub(super) struct Refused {
    pub error: AuthError,
    pub end: Option<SessionEnd>,
}

impl<E: Into<AuthError>> From<E> for Refused {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            end: None,
        }
    }
}

fn address_taken() -> AuthError {
    AuthError::AlreadyExists("another user has this address".into())
}
