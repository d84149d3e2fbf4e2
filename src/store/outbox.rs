//! The transactional outbox of emails.

use sqlx::FromRow;

use super::{Result, Store, Tx, on_pool, on_tx};
use crate::clock::UnixMillis;

stored_enum! {
    /// Which email an outbox row is (`kind`).
    pub enum MailKind {
        /// A sign-in email: a code, a magic link, or both.
        SignIn = "sign_in",
        /// A notice to an unknown address of a login-only tenant: "no
        /// account here".
        NoAccount = "no_account",
        /// Nothing to send (an unknown address of a login-only tenant
        /// without notices). Written so both answers cost the same; never
        /// delivered.
        Suppressed = "suppressed",
        /// A notice to a user's old address that it was changed.
        EmailChanged = "email_changed",
    }
}

#[derive(Debug)]
pub struct NewMail<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub session_id: Option<&'a str>,
    pub kind: MailKind,
    pub recipient: &'a str,
    pub payload_sealed: Option<&'a [u8]>,
    pub created_at: UnixMillis,
    /// False: record the message but never send it (state `suppressed`).
    pub deliver: bool,
    /// Wake other replicas' workers (PostgreSQL NOTIFY at commit).
    pub notify: bool,
}

/// A message this worker now holds a lease on.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedMail {
    pub id: String,
    pub tenant_id: String,
    pub session_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub kind: MailKind,
    pub recipient: String,
    pub payload_sealed: Option<Vec<u8>>,
    /// Delivery attempts, this one included.
    pub attempts: i32,
    pub created_at: UnixMillis,
}

/// What happened to one claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the mail server at `at`; the session's proof then works
    /// until `extend` = (tenant, session, until).
    Sent {
        id: String,
        at: UnixMillis,
        extend: Option<(String, String, UnixMillis)>,
    },
    /// Failed for now: try again at `at` (only by the claim `attempts`).
    /// When the relay may have accepted it after all (not confirmed), the
    /// session's proof works until `extend`, as for [`Outcome::Sent`].
    Retry {
        id: String,
        attempts: i32,
        at: UnixMillis,
        error: String,
        extend: Option<(String, String, UnixMillis)>,
    },
    /// Given up (only by the claim `attempts`).
    Dead {
        id: String,
        attempts: i32,
        error: String,
    },
}

impl Outcome {
    /// The message it is about.
    pub fn id(&self) -> &str {
        match self {
            Self::Sent { id, .. } | Self::Retry { id, .. } | Self::Dead { id, .. } => id,
        }
    }
}

/// Woken when any replica queues mail.
pub struct OutboxListener(sqlx::postgres::PgListener);

impl OutboxListener {
    /// Waits for the next wake-up. After a lost connection it reconnects
    /// (and reports the loss as an error once).
    pub async fn recv(&mut self) -> Result<()> {
        self.0.recv().await?;
        Ok(())
    }
}

/// A message as `latchkey outbox` lists it.
#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: String,
    pub tenant_id: String,
    pub kind: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: UnixMillis,
    pub last_error: Option<String>,
    pub created_at: UnixMillis,
    pub sent_at: Option<UnixMillis>,
}

/// How many messages are in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: i64,
    pub sent: i64,
    pub dead: i64,
}

const ENQUEUE: &str = "INSERT INTO outbox \
    (id, tenant_id, session_id, kind, recipient, payload_sealed, state, attempts, next_attempt_at, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $8, 0, $7, $7)";

// Claiming pushes next_attempt_at forward by the lease: the message is not due
// again unless this worker dies before recording the outcome. It clears
// last_error, which the outcome sets again: a queued message with an error is
// one waiting for its retry, never one being sent (see BRING_FORWARD).
//
// Every plan below is meant to be the same whatever the statistics say (see
// the plan checks in the store conformance tests, run on an analyzed table
// with a backlog): the due messages come from the `outbox_due` partial index
// in due order, and every write to a message goes through the primary key.
// On PostgreSQL the claimed ids are collected into an array first
// (`= ANY(ARRAY(…))`), so the update is always a primary-key lookup of at
// most `limit` ids: written as `IN (subquery)`, the generic plan of a
// prepared statement (which guesses the LIMIT) was a hash join over a
// sequential scan of the whole table.
const CLAIM_POSTGRES: &str = "UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1, last_error = NULL \
    WHERE id = ANY(ARRAY(SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= $1 \
                         ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)) \
    RETURNING id, tenant_id, session_id, kind, recipient, payload_sealed, attempts, created_at";
// SQLite has one writer at a time (the claim runs under BEGIN IMMEDIATE), so
// there is nothing to skip.
const CLAIM_SQLITE: &str = "UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1, last_error = NULL \
    WHERE id IN (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at LIMIT $3) \
    RETURNING id, tenant_id, session_id, kind, recipient, payload_sealed, attempts, created_at";

// The writes to one message test its state as `(state = …) IS TRUE`, never
// as a plain `state = 'queued'`: that condition matches the predicate of the
// partial index `outbox_due`, and after an ANALYZE that saw an (almost)
// empty queue the planner then preferred a full scan of that index, filtered
// on `id`, to the primary-key lookup: with a backlog every outcome write
// read the whole backlog. The planner cannot prove the `IS TRUE` form
// implies the index predicate, so the primary key is the only index left.
// (state is NOT NULL: both forms select the same rows.)

// The plaintext payload is dropped as soon as it is no longer needed. A send
// that succeeded is recorded even if another worker has claimed the message
// since (its own send is the duplicate at-least-once allows).
const MARK_SENT: &str = "UPDATE outbox SET state = 'sent', sent_at = $2, payload_sealed = NULL, last_error = NULL \
    WHERE id = $1 AND (state = 'queued') IS TRUE";

// Failures are recorded only by the latest claim (`attempts` is the fencing
// token): a worker whose lease ran out must not reschedule or kill a message
// another worker now holds.
const RESCHEDULE: &str = "UPDATE outbox SET next_attempt_at = $2, last_error = $3 \
    WHERE id = $1 AND (state = 'queued') IS TRUE AND attempts = $4";

// Extends a claim while its message is being sent. Only by the latest claim.
const RENEW: &str = "UPDATE outbox SET next_attempt_at = $2 \
    WHERE id = $1 AND (state = 'queued') IS TRUE AND attempts = $3";

/// How the error of a message held back because the relay may already have
/// it begins (see the outbox worker); such a message is never brought forward.
pub const UNCONFIRMED: &str = "not confirmed: ";

// Makes every message waiting for the retry of a failed attempt due now (the
// relay works again), except those held back as possibly delivered. A message
// being sent has no error (the claim cleared it), so is not touched. Reads
// the queued messages through the `outbox_due` partial index; once per
// recovery of the relay.
const BRING_FORWARD: &str = "UPDATE outbox SET next_attempt_at = $1 \
    WHERE state = 'queued' AND next_attempt_at > $1 AND last_error IS NOT NULL \
    AND last_error NOT LIKE 'not confirmed: %'";

// Gives a claim back untried (shutdown came between claim and send): due now
// for any replica, the attempt not counted. Only by the latest claim.
const RELEASE: &str = "UPDATE outbox SET next_attempt_at = $2, attempts = attempts - 1 \
    WHERE id = $1 AND (state = 'queued') IS TRUE AND attempts = $3";

// A dead message keeps its sealed payload, so `latchkey outbox requeue` can
// send it again (the proof's own expiry still applies).
const MARK_DEAD: &str = "UPDATE outbox SET state = 'dead', last_error = $2 \
    WHERE id = $1 AND (state = 'queued') IS TRUE AND attempts = $3";

const REQUEUE_DEAD: &str = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = $2 \
    WHERE id = $1 AND (state = 'dead') IS TRUE";
const REQUEUE_ALL_DEAD: &str = "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = $1 \
    WHERE state = 'dead'";

const LIST: &str = "SELECT id, tenant_id, kind, recipient, state, attempts, next_attempt_at, last_error, created_at, sent_at \
    FROM outbox WHERE state = $1 ORDER BY created_at LIMIT $2";

/// Wakes every replica's worker (PostgreSQL delivers it at commit).
const NOTIFY: &str = "SELECT pg_notify('latchkey_outbox', '')";

/// The PostgreSQL channel the outbox worker listens on.
pub const OUTBOX_CHANNEL: &str = "latchkey_outbox";

const COUNTS: &str = "SELECT state, COUNT(*) FROM outbox GROUP BY state";

// (The partial index on queued rows serves it.)
const BACKLOG: &str = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'queued'";

/// The PostgreSQL statements the outbox worker runs for every batch, for the
/// plan checks of the store conformance tests: (name, SQL, parameter types,
/// sample arguments). The samples name message `q25000` and times in the
/// millions: the tests fill the table with a backlog to match.
#[doc(hidden)]
pub const PLAN_CHECKED_STATEMENTS: &[(&str, &str, &str, &str)] = &[
    (
        "claim",
        CLAIM_POSTGRES,
        "bigint, bigint, bigint",
        "1000000, 2000000, 32",
    ),
    ("mark_sent", MARK_SENT, "text, bigint", "'q25000', 1000000"),
    (
        "reschedule",
        RESCHEDULE,
        "text, bigint, text, integer",
        "'q25000', 1000000, 'timeout', 1",
    ),
    (
        "renew",
        RENEW,
        "text, bigint, integer",
        "'q25000', 1000000, 1",
    ),
    (
        "release",
        RELEASE,
        "text, bigint, integer",
        "'q25000', 1000000, 1",
    ),
    (
        "mark_dead",
        MARK_DEAD,
        "text, text, integer",
        "'q25000', 'rejected', 1",
    ),
    (
        "requeue_dead",
        REQUEUE_DEAD,
        "text, bigint",
        "'q25000', 1000000",
    ),
];

impl Tx {
    /// Queues a message. On PostgreSQL the same transaction notifies every
    /// replica's worker, which wakes at commit.
    pub async fn enqueue_mail(&mut self, m: &NewMail<'_>) -> Result<()> {
        if m.deliver
            && m.notify
            && let super::TxInner::Postgres(tx) = &mut self.inner
        {
            sqlx::query(NOTIFY).execute(&mut **tx).await?;
        }
        on_tx!(self, "enqueue_mail", |conn| {
            sqlx::query(ENQUEUE)
                .bind(m.id)
                .bind(m.tenant_id)
                .bind(m.session_id)
                .bind(m.kind.as_str())
                .bind(m.recipient)
                .bind(m.payload_sealed)
                .bind(m.created_at)
                .bind(if m.deliver { "queued" } else { "suppressed" })
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

impl Store {
    /// Claims up to `limit` due messages until `lease_until`.
    pub async fn claim_mail(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: i64,
    ) -> Result<Vec<ClaimedMail>> {
        let sql = match self.backend() {
            super::Backend::Postgres => CLAIM_POSTGRES,
            super::Backend::Sqlite => CLAIM_SQLITE,
        };
        let mut tx = self.begin().await?;
        let claimed = on_tx!(tx, "claim_mail", |conn| {
            sqlx::query_as::<_, ClaimedMail>(sql)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(conn)
                .await
        })?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Makes the messages waiting to retry a failed send due at `now`
    /// (see [`BRING_FORWARD`]). Returns how many.
    pub async fn bring_mail_forward(&self, now: UnixMillis) -> Result<u64> {
        Ok(on_pool!(self, "bring_mail_forward", |pool| {
            sqlx::query(BRING_FORWARD)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }

    /// Extends the claims `(id, attempts)` of messages still being sent
    /// until `until`, in one transaction.
    pub async fn renew_mail_leases(
        &self,
        claims: &[(String, i32)],
        until: UnixMillis,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, attempts) in claims {
            on_tx!(tx, "renew_mail_leases", |conn| {
                sqlx::query(RENEW)
                    .bind(id)
                    .bind(until)
                    .bind(*attempts)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives claimed messages back untried, due at `now` (so another
    /// replica, or the next start, sends them without waiting out the lease).
    pub async fn release_mail(&self, claimed: &[ClaimedMail], now: UnixMillis) -> Result<()> {
        let mut tx = self.begin().await?;
        for mail in claimed {
            on_tx!(tx, "release_mail", |conn| {
                sqlx::query(RELEASE)
                    .bind(&mail.id)
                    .bind(now)
                    .bind(mail.attempts)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the outcomes of a batch in one transaction (one commit per
    /// batch, not per message).
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        let mut tx = self.begin().await?;
        for outcome in outcomes {
            match outcome {
                Outcome::Sent { id, at, extend } => {
                    on_tx!(tx, "record_outcomes", |conn| {
                        sqlx::query(MARK_SENT)
                            .bind(id)
                            .bind(*at)
                            .execute(conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                    if let Some((tenant_id, session_id, until)) = extend {
                        tx.extend_proof(tenant_id, session_id, *until).await?;
                    }
                }
                Outcome::Retry {
                    id,
                    attempts,
                    at,
                    error,
                    extend,
                } => {
                    on_tx!(tx, "record_outcomes", |conn| {
                        sqlx::query(RESCHEDULE)
                            .bind(id)
                            .bind(*at)
                            .bind(error)
                            .bind(*attempts)
                            .execute(conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                    if let Some((tenant_id, session_id, until)) = extend {
                        tx.extend_proof(tenant_id, session_id, *until).await?;
                    }
                }
                Outcome::Dead {
                    id,
                    attempts,
                    error,
                } => {
                    on_tx!(tx, "record_outcomes", |conn| {
                        sqlx::query(MARK_DEAD)
                            .bind(id)
                            .bind(error)
                            .bind(*attempts)
                            .execute(conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Messages in `state`, oldest first.
    pub async fn outbox_list(&self, state: &str, limit: i64) -> Result<Vec<OutboxRow>> {
        Ok(on_pool!(self, "outbox_list", |pool| {
            sqlx::query_as::<_, OutboxRow>(LIST)
                .bind(state)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Queues dead messages again (one, or all when `id` is `None`).
    /// Returns how many.
    pub async fn requeue_dead(&self, id: Option<&str>, now: UnixMillis) -> Result<u64> {
        Ok(on_pool!(self, "requeue_dead", |pool| {
            match id {
                Some(id) => {
                    sqlx::query(REQUEUE_DEAD)
                        .bind(id)
                        .bind(now)
                        .execute(pool)
                        .await
                }
                None => sqlx::query(REQUEUE_ALL_DEAD).bind(now).execute(pool).await,
            }
            .map(|r| r.rows_affected())
        })?)
    }

    /// A listener every replica's enqueue wakes (PostgreSQL only: SQLite
    /// has one process, woken in-process).
    pub async fn listen_outbox(&self) -> Result<Option<OutboxListener>> {
        match &self.pool {
            super::Pool::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(OUTBOX_CHANNEL).await?;
                Ok(Some(OutboxListener(listener)))
            }
            super::Pool::Sqlite(_) => Ok(None),
        }
    }

    /// Records one sent message (see [`Outcome::Sent`]).
    pub async fn mark_mail_sent(
        &self,
        id: &str,
        at: UnixMillis,
        extend: Option<(&str, &str, UnixMillis)>,
    ) -> Result<()> {
        self.record_outcomes(&[Outcome::Sent {
            id: id.to_owned(),
            at,
            extend: extend.map(|(t, s, u)| (t.to_owned(), s.to_owned(), u)),
        }])
        .await
    }

    /// Records a temporary failure of the claim made with `attempts`.
    pub async fn reschedule_mail(
        &self,
        id: &str,
        attempts: i32,
        at: UnixMillis,
        error: &str,
    ) -> Result<()> {
        self.record_outcomes(&[Outcome::Retry {
            id: id.to_owned(),
            attempts,
            at,
            error: error.to_owned(),
            extend: None,
        }])
        .await
    }

    /// Records a permanent failure of the claim made with `attempts`.
    pub async fn mark_mail_dead(&self, id: &str, attempts: i32, error: &str) -> Result<()> {
        self.record_outcomes(&[Outcome::Dead {
            id: id.to_owned(),
            attempts,
            error: error.to_owned(),
        }])
        .await
    }

    /// How many emails wait to be sent, and since when the oldest.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<UnixMillis>)> {
        Ok(on_pool!(self, "outbox_backlog", |pool| {
            sqlx::query_as::<_, (i64, Option<UnixMillis>)>(BACKLOG)
                .fetch_one(pool)
                .await
        })?)
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(String, i64)> = on_pool!(self, "outbox_counts", |pool| {
            sqlx::query_as::<_, (String, i64)>(COUNTS)
                .fetch_all(pool)
                .await
        })?;
        let mut counts = OutboxCounts::default();
        for (state, n) in rows {
            match state.as_str() {
                "queued" => counts.queued = n,
                "sent" => counts.sent = n,
                "dead" => counts.dead = n,
                _ => {}
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_held_as_possibly_delivered_are_never_brought_forward() {
        assert!(super::BRING_FORWARD.contains(&format!("NOT LIKE '{}%'", super::UNCONFIRMED)));
    }
}
