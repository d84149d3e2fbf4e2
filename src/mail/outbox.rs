//! The outbox worker: claims due messages with a lease, sends them, and
//! records the outcome. A message whose send fails for a temporary reason is
//! retried with exponential backoff and jitter; a permanent refusal (SMTP 5xx)
//! marks it dead with the error. Nothing is dropped.
//!
//! A claimed batch is sent concurrently (the SMTP transport pools
//! connections) and each send is bounded by `send_timeout`; while a send
//! runs its claim is renewed every third of the lease, so a claim never
//! runs out under a live worker, and a dead worker's claims run out one
//! (short) lease after its last renewal.
//!
//! Delivery is at least once: if the process dies after the mail server
//! accepted a message but before the outcome is committed, the lease runs out
//! and the message is sent again (with the same `Message-ID`, so mail clients
//! show one).

use std::{sync::Arc, time::Duration};

use lettre::message::{Mailbox, MultiPart, header};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    templates::{SignInEmail, Templates},
    transport::{Outgoing, SendError, Transport},
};
use crate::{
    auth::{email::EmailAddress, payload, tenants::Tenants},
    clock::{Clock, UnixMillis, millis},
    kek::Kek,
    store::{ClaimedMail, MailKind, Outcome, Store, UNCONFIRMED},
};

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Poll this often when nobody wakes the worker.
    pub poll_interval: Duration,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claim holds a message before another worker may take it
    /// (renewed while the message is being sent).
    pub lease: Duration,
    /// Longest a single send may take, connection included.
    pub send_timeout: Duration,
    /// Attempts before a message is given up.
    pub max_attempts: u32,
    /// Messages claimed per round trip.
    pub batch: i64,
}

/// A message the relay may have accepted (it got the whole message but never
/// answered) is not sent again before this long.
const UNCERTAIN_RESEND_AFTER: Duration = Duration::from_secs(600);

/// Deliveries later than this after StartAuth move the proof's expiry.
const EXTEND_AFTER_MS: i64 = 1_000;

/// A message ready to send, or the reason not to.
enum Built {
    Send {
        message: lettre::Message,
        /// The code it carries (for the dev mailbox log; empty if none).
        code: String,
        /// (validity, cap): once accepted, the proof works for `validity`
        /// from then, but never past `cap`.
        extend_to: Option<(i64, UnixMillis)>,
    },
    /// Nothing to send (a suppressed email): accepted by the transport
    /// without sending, at the moment the relay would have accepted it, with
    /// the same effect on the proof's expiry.
    Discard {
        extend_to: Option<(i64, UnixMillis)>,
    },
    /// The proof's absolute limit passed before the email could go out.
    Expired,
}

/// Whether the relay is trusted with emails: a circuit breaker. It opens
/// after [`Breaker::TRIP_AFTER`] temporary failures in a row (the relay is
/// down, or refuses everything for now): the worker then claims nothing,
/// and the messages already tried wait for their retries, except for one
/// probe now and then (half-open): a single due email, or when none is due
/// a connection to the relay. The first probe that works closes it and
/// brings every message waiting for a retry forward, so an outage's backlog
/// goes out seconds after the relay recovers, not at each message's backoff.
///
/// A relay that takes connections but refuses mail (421 to MAIL) passes a
/// connection probe: when sending fails again right after one closed the
/// breaker, connection probes stop until an email goes through, so such an
/// outage costs the queued emails one extra attempt, not one per probe.
#[derive(Debug)]
pub struct Breaker {
    /// Temporary failures since the last success.
    failures: u32,
    /// While open: when the next probe may go, and the wait after it.
    open: Option<(tokio::time::Instant, Duration)>,
    /// Whether a connection (no email) may serve as a probe.
    connection_probes: bool,
    /// The breaker was last closed by a connection probe, and no email has
    /// gone through since.
    closed_by_connection: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            failures: 0,
            open: None,
            connection_probes: true,
            closed_by_connection: false,
        }
    }
}

/// What the worker may claim now.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// A whole batch (closed).
    Batch,
    /// One message, as a probe (half-open).
    Probe,
    /// Nothing until then (open).
    WaitUntil(tokio::time::Instant),
}

impl Breaker {
    /// Temporary failures in a row that open it.
    const TRIP_AFTER: u32 = 2;
    /// The longest wait between two probes (shorter if the longest retry
    /// delay is).
    const PROBE_MAX: Duration = Duration::from_secs(5);

    fn plan(&self) -> Plan {
        match self.open {
            None => Plan::Batch,
            Some((next, _)) if tokio::time::Instant::now() < next => Plan::WaitUntil(next),
            Some(_) => Plan::Probe,
        }
    }

    /// A send worked; true when that closed the breaker.
    fn worked(&mut self) -> bool {
        self.failures = 0;
        self.connection_probes = true;
        self.closed_by_connection = false;
        self.open.take().is_some()
    }

    /// A connection probe worked: true when that closed the breaker (it
    /// does only while connection probes are trusted).
    fn connected(&mut self) -> bool {
        if !self.connection_probes {
            return false;
        }
        self.failures = 0;
        self.closed_by_connection = true;
        self.open.take().is_some()
    }

    /// A send failed for a temporary reason; `first` is the first wait
    /// between probes, doubling up to `most`.
    fn failed(&mut self, first: Duration, most: Duration) {
        let most = most.min(Self::PROBE_MAX);
        self.failures += 1;
        if std::mem::take(&mut self.closed_by_connection) {
            self.connection_probes = false;
        }
        let now = tokio::time::Instant::now();
        self.open = match self.open {
            // The rest of the batch that opened it: the schedule stands.
            Some((next, wait)) if now < next => Some((next, wait)),
            // A probe failed: wait longer for the next.
            Some((_, wait)) => Some((now + wait, (wait * 2).min(most))),
            None if self.failures >= Self::TRIP_AFTER => {
                let wait = first.min(most);
                Some((now + wait, (wait * 2).min(most)))
            }
            None => None,
        };
    }
}

/// The worker; built by the server, run once.
pub struct OutboxWorker {
    pub store: Store,
    pub kek: Kek,
    pub clock: Clock,
    pub transport: Transport,
    pub templates: Arc<Templates>,
    /// Each tenant's sender and app name.
    pub tenants: Tenants,
    pub settings: WorkerSettings,
    /// Notified after a commit that queued mail.
    pub wake: Arc<Notify>,
    /// Whether sending fails, logged once per outage.
    pub failing: crate::telemetry::Outage,
    /// Whether to send at all (see [`Breaker`]).
    pub breaker: std::sync::Mutex<Breaker>,
}

impl OutboxWorker {
    /// Delivers until `stop` fires; a message being sent when it fires is
    /// finished first.
    pub async fn run(self, stop: CancellationToken) {
        // Other replicas' enqueues wake us through PostgreSQL; ours through
        // `wake`; the poll is the fallback for both.
        let mut listener = match self.store.listen_outbox().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot LISTEN, polling only");
                None
            }
        };
        loop {
            // Drain everything that is due, then wait for a wake-up or a tick.
            loop {
                if stop.is_cancelled() {
                    return;
                }
                match self.deliver_due(&stop).await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        crate::telemetry::DATABASE
                            .failed(&format!("outbox: claiming failed: {e:#}"));
                        break;
                    }
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(e) = l.recv().await {
                            tracing::warn!(error = %e, "outbox: LISTEN connection lost");
                            tokio::time::sleep(self.settings.poll_interval).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let probe = async {
                match self.plan() {
                    Plan::WaitUntil(at) => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = notified => {}
                _ = probe => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Claims one batch of due messages and delivers it. Returns how many
    /// were claimed.
    pub async fn deliver_due(&self, stop: &CancellationToken) -> anyhow::Result<usize> {
        let limit = match self.plan() {
            Plan::Batch => self.settings.batch,
            Plan::Probe => 1,
            Plan::WaitUntil(_) => return Ok(0),
        };
        let now = self.clock.now_ms();
        let lease_until = now + millis(self.settings.lease);
        let batch = self.store.claim_mail(now, lease_until, limit).await?;
        let claimed = batch.len();
        if claimed == 0 && limit == 1 {
            // Nothing due to probe with: does the relay take a connection?
            // (Unless that has proven to say nothing: then wait for an email
            // to come due.)
            let trusted = self.breaker.lock().expect("breaker lock").connection_probes;
            if !trusted {
                self.breaker_failed();
                return Ok(0);
            }
            let probe = self.transport.accept_unsent();
            match tokio::time::timeout(self.settings.send_timeout, probe).await {
                Ok(Ok(())) => {
                    let closed = self.breaker.lock().expect("breaker lock").connected();
                    if closed {
                        self.bring_forward().await;
                    }
                }
                // (Not an email that failed: the outage log counts those.)
                _ => self.breaker_failed(),
            }
            return Ok(0);
        }
        if stop.is_cancelled() {
            // Shutting down: give the claims back untried (else they would
            // wait out their lease before any replica sends them).
            if let Err(e) = self.store.release_mail(&batch, now).await {
                tracing::warn!(error = %e, "outbox: releasing claims at shutdown failed; they are sent once their lease ends");
            }
            return Ok(0);
        }
        // An accepted email whose code would otherwise stop working before
        // the batch ends is recorded as soon as its send ends (with any
        // others urgent by then): its code must work at once, whatever else
        // is still being sent. The rest are recorded together at the end,
        // one commit per batch.
        use futures_util::StreamExt;
        let in_flight = std::sync::Mutex::new(
            batch
                .iter()
                .map(|m| (m.id.clone(), m.attempts))
                .collect::<Vec<_>>(),
        );
        let mut ended = batch
            .into_iter()
            .map(|mail| async move {
                let counted = mail.kind != MailKind::Suppressed;
                let (outcome, urgent) = self.deliver(mail).await;
                (outcome, counted, urgent)
            })
            .collect::<futures_util::stream::FuturesUnordered<_>>()
            .ready_chunks(claimed.max(1));
        let sent = CancellationToken::new();
        let work = async {
            let mut later = Vec::new();
            while let Some(chunk) = ended.next().await {
                in_flight
                    .lock()
                    .expect("in-flight lock")
                    .retain(|(id, _)| !chunk.iter().any(|(o, _, _)| o.id() == id));
                let (urgent, rest): (Vec<_>, Vec<_>) = chunk.into_iter().partition(|d| d.2);
                later.extend(rest);
                if !urgent.is_empty() {
                    self.record(urgent).await;
                }
            }
            sent.cancel();
            if !later.is_empty() {
                self.record(later).await;
            }
        };
        tokio::join!(work, self.renew_leases(&in_flight, &sent));
        Ok(claimed)
    }

    /// Renews the claims of the messages still being sent, every third of
    /// the lease, until `sent`: a slow send keeps its claim however long it
    /// takes (within its own bound), so the lease can be short and a dead
    /// replica's messages wait only that long. (Runs beside the sends, so a
    /// slow renewal never pauses them.)
    async fn renew_leases(
        &self,
        in_flight: &std::sync::Mutex<Vec<(String, i32)>>,
        sent: &CancellationToken,
    ) {
        let every = self.settings.lease / 3;
        loop {
            tokio::select! {
                _ = sent.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let claims = in_flight.lock().expect("in-flight lock").clone();
            if claims.is_empty() {
                continue;
            }
            let until = self.clock.now_ms() + millis(self.settings.lease);
            if let Err(e) = self.store.renew_mail_leases(&claims, until).await {
                // Another renewal follows; if none gets through before the
                // lease ends another replica may send the message too (at
                // least once).
                crate::telemetry::DATABASE
                    .failed(&format!("outbox: renewing the claims failed: {e:#}"));
            }
        }
    }

    /// Records outcomes `(outcome, counted, _)` in one transaction.
    async fn record(&self, delivered: Vec<(Outcome, bool, bool)>) {
        let (outcomes, counted): (Vec<Outcome>, Vec<bool>) =
            delivered.into_iter().map(|(o, c, _)| (o, c)).unzip();
        if let Err(e) = self.store.record_outcomes(&outcomes).await {
            // The leases run out and the messages are tried again.
            crate::telemetry::DATABASE
                .failed(&format!("outbox: recording the outcomes failed: {e:#}"));
        } else {
            // Suppressed emails are never counted as emails.
            let counted: Vec<Outcome> = outcomes
                .into_iter()
                .zip(counted)
                .filter_map(|(o, counted)| counted.then_some(o))
                .collect();
            count_outcomes(&counted);
        }
    }

    #[tracing::instrument(name = "deliver", skip_all, fields(mail_id = %mail.id, attempt = mail.attempts))]
    /// Sends one message; returns its outcome and whether recording it is
    /// urgent (its code would otherwise expire before the batch ends).
    async fn deliver(&self, mail: ClaimedMail) -> (Outcome, bool) {
        let now = self.clock.now_ms();
        // How the proof's expiry moves once the email is (or may be) out.
        let mut moves = None;
        let outcome = match self.build(&mail, now) {
            Ok(Built::Send {
                message,
                code,
                extend_to,
            }) => {
                moves = extend_to;
                let send = self.transport.send(Outgoing {
                    id: &mail.id,
                    message,
                    code: &code,
                    recipient: &mail.recipient,
                });
                match tokio::time::timeout(self.settings.send_timeout, send).await {
                    Ok(Ok(())) => Ok(extend_to),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(SendError::Transient(format!(
                        "no answer from the mail server within {:?}",
                        self.settings.send_timeout
                    ))),
                }
            }
            Ok(Built::Discard { extend_to }) => {
                moves = extend_to;
                let accept = self.transport.accept_unsent();
                match tokio::time::timeout(self.settings.send_timeout, accept).await {
                    Ok(Ok(())) => Ok(extend_to),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(SendError::Transient(format!(
                        "no answer from the mail server within {:?}",
                        self.settings.send_timeout
                    ))),
                }
            }
            Ok(Built::Expired) => Err(SendError::Permanent(
                "the sign-in code expired before the email could be delivered".into(),
            )),
            Err(e) => Err(SendError::Permanent(format!(
                "cannot build the message: {e:#}"
            ))),
        };
        let now = self.clock.now_ms();
        match &outcome {
            Ok(_) => self.relay_works().await,
            // (Messages stay queued and are retried.)
            Err(SendError::Transient(error)) => self.relay_failed(error),
            // The relay answers, slowly: not an outage of it.
            Err(SendError::Uncertain(error)) => self.failing.failed(error),
            Err(SendError::Permanent(_)) => {}
        }
        // The proof's validity counts from now (within its cap). A delivery
        // within a second of StartAuth changes nothing worth a write.
        let extend = moves
            .filter(|_| now - mail.created_at > EXTEND_AFTER_MS)
            .map(|(ttl, cap)| (now + ttl).min(cap));
        let failed = match outcome {
            Ok(extend_to) => {
                tracing::info!(
                    latency_ms = now - mail.created_at,
                    "email accepted by the mail server"
                );
                // Until recorded, the code works until `created_at + ttl`;
                // the rest of the batch may take up to the send bound.
                let urgent = mail.session_id.is_some()
                    && extend_to.is_some_and(|(ttl, _)| {
                        mail.created_at + ttl < now + millis(self.settings.send_timeout)
                    });
                let sent = Outcome::Sent {
                    extend: mail
                        .session_id
                        .zip(extend)
                        .map(|(sid, until)| (mail.tenant_id, sid, until)),
                    id: mail.id,
                    at: now,
                };
                return (sent, urgent && extend.is_some());
            }
            Err(SendError::Permanent(error)) => {
                tracing::error!(error = %error, "email given up: marked dead");
                Outcome::Dead {
                    id: mail.id,
                    attempts: mail.attempts,
                    error,
                }
            }
            Err(SendError::Transient(error) | SendError::Uncertain(error))
                if mail.attempts
                    >= i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX) =>
            {
                tracing::error!(error = %error, attempts = mail.attempts, "email not sent after every attempt: marked dead");
                Outcome::Dead {
                    error: format!("gave up after {} attempts: {error}", mail.attempts),
                    id: mail.id,
                    attempts: mail.attempts,
                }
            }
            Err(SendError::Uncertain(error)) => {
                // Sending it again at once could deliver a second copy: the
                // relay may still accept this one (RFC 5321 §4.5.3.2.6 gives
                // it ten minutes to answer the end of a message). It most
                // likely did: the code works from now, as if it had said so.
                tracing::debug!(error = %error, retry_in_ms = millis(UNCERTAIN_RESEND_AFTER), "email not confirmed by the mail server: not sent again before the retry");
                Outcome::Retry {
                    extend: mail
                        .session_id
                        .clone()
                        .zip(extend)
                        .map(|(sid, until)| (mail.tenant_id.clone(), sid, until)),
                    id: mail.id,
                    attempts: mail.attempts,
                    at: now + millis(UNCERTAIN_RESEND_AFTER),
                    error: format!(
                        "{UNCONFIRMED}{error} (it may have been delivered; not sent again \
                         for {} minutes)",
                        UNCERTAIN_RESEND_AFTER.as_secs() / 60
                    ),
                }
            }
            Err(SendError::Transient(error)) => {
                let delay = self.backoff(mail.attempts);
                tracing::debug!(error = %error, retry_in_ms = millis(delay), "email not sent: will retry");
                Outcome::Retry {
                    id: mail.id,
                    attempts: mail.attempts,
                    at: now + millis(delay),
                    error,
                    extend: None,
                }
            }
        };
        (failed, false)
    }

    fn plan(&self) -> Plan {
        self.breaker.lock().expect("breaker lock").plan()
    }

    /// A send (or a probe) worked. If that closes the breaker, the messages
    /// waiting for a retry go now.
    async fn relay_works(&self) {
        self.failing.worked();
        let closed = self.breaker.lock().expect("breaker lock").worked();
        if closed {
            self.bring_forward().await;
        }
    }

    /// The breaker closed: every message waiting for a retry goes now.
    async fn bring_forward(&self) {
        match self.store.bring_mail_forward(self.clock.now_ms()).await {
            Ok(n) => tracing::info!(
                brought_forward = n,
                "the mail relay works again: emails waiting for a retry go now"
            ),
            Err(e) => crate::telemetry::DATABASE
                .failed(&format!("outbox: bringing retries forward failed: {e:#}")),
        }
        // Claim them at once.
        self.wake.notify_one();
    }

    /// A send failed for a temporary reason.
    fn relay_failed(&self, error: &dyn std::fmt::Display) {
        self.failing.failed(error);
        self.breaker_failed();
    }

    /// Probes start after the first retry delay (at most 1 s) and wait
    /// no longer than the longest one.
    fn breaker_failed(&self) {
        let first = self.settings.retry_base.min(Duration::from_secs(1));
        self.breaker
            .lock()
            .expect("breaker lock")
            .failed(first, self.settings.retry_max);
    }

    /// Builds the message (and says how the proof's expiry moves once it is
    /// accepted), or reports that its proof can no longer be valid.
    fn build(&self, mail: &ClaimedMail, now: UnixMillis) -> anyhow::Result<Built> {
        let tenant = self.tenants.get(&mail.tenant_id);
        let policy = tenant
            .as_ref()
            .map_or(self.tenants.defaults(), |t| &t.policy);
        let sealed = mail
            .payload_sealed
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("payload already erased"))?;
        let payload = payload::open(&self.kek, &mail.id, sealed)?;
        let locale = self
            .templates
            .resolve_locale(&payload.locale, &policy.default_locale)
            .to_owned();
        // Every kind of login email follows the same expiry rule, whether it
        // carries a proof or not: on a login-only tenant, how long a
        // login's proof lives must not tell a known address from an unknown
        // one.
        let ttl = payload.expires_at - mail.created_at;
        let cap = if payload.extend_until > 0 {
            payload.extend_until
        } else {
            payload.expires_at
        };
        if now >= cap {
            return Ok(Built::Expired);
        }
        let extend_to = Some((ttl, cap));
        let (rendered, code) = match mail.kind {
            MailKind::SignIn => {
                let rendered = self.templates.sign_in(
                    &mail.tenant_id,
                    &locale,
                    &SignInEmail {
                        app_name: &policy.app_name,
                        email: &mail.recipient,
                        code: payload.code.as_deref(),
                        link: payload.link.as_deref(),
                        minutes: (ttl / 60_000).max(1),
                    },
                )?;
                (rendered, payload.code.unwrap_or_default())
            }
            MailKind::NoAccount => (
                self.templates.no_account(
                    &mail.tenant_id,
                    &locale,
                    &policy.app_name,
                    &mail.recipient,
                )?,
                String::new(),
            ),
            MailKind::EmailChanged => (
                self.templates.email_changed(
                    &mail.tenant_id,
                    &locale,
                    &policy.app_name,
                    &mail.recipient,
                    payload.new_email.as_deref().unwrap_or("-"),
                )?,
                String::new(),
            ),
            MailKind::Suppressed => return Ok(Built::Discard { extend_to }),
        };
        let from: Mailbox = policy.mail_from.parse()?;
        let domain = from.email.domain().to_owned();
        let message = lettre::Message::builder()
            .from(from)
            .to(Mailbox::new(None, recipient(&mail.recipient)?))
            .subject(rendered.subject)
            // Stable across retries, so a duplicate delivery is recognisable.
            .message_id(Some(format!("<{}@{domain}>", mail.id)))
            .raw_header(header::HeaderValue::new(
                header::HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))?;
        Ok(Built::Send {
            message,
            code,
            extend_to,
        })
    }

    /// Exponential backoff with jitter: between half and all of
    /// `base * 2^(attempts-1)`, capped at `retry_max`.
    fn backoff(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let full = self
            .settings
            .retry_base
            .saturating_mul(1 << exp)
            .min(self.settings.retry_max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// The transport's recipient for a stored address: the one validation
/// StartAuth applied, then lettre's own (which [`EmailAddress::parse`] already
/// meets; an old row may hold a spelling from before addresses were canonical).
fn recipient(stored: &str) -> anyhow::Result<lettre::Address> {
    let email = EmailAddress::parse(stored)?;
    Ok(lettre::Address::new(email.local_part(), email.domain())?)
}

/// Counts recorded outcomes in the `latchkey_emails_total` metric.
fn count_outcomes(outcomes: &[Outcome]) {
    let (mut sent, mut retried, mut dead) = (0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Outcome::Sent { .. } => sent += 1,
            Outcome::Retry { .. } => retried += 1,
            Outcome::Dead { .. } => dead += 1,
        }
    }
    crate::metrics::count_n(crate::metrics::EMAILS, "event", "sent", sent);
    crate::metrics::count_n(crate::metrics::EMAILS, "event", "retried", retried);
    crate::metrics::count_n(crate::metrics::EMAILS, "event", "dead", dead);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Breaker, Plan};

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_probes_until_one_works() {
        let first = Duration::from_millis(50);
        let mut breaker = Breaker::default();
        breaker.failed(first, Breaker::PROBE_MAX);
        assert_eq!(breaker.plan(), Plan::Batch, "one failure is not an outage");
        breaker.failed(first, Breaker::PROBE_MAX);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(breaker.plan(), Plan::Probe);
        // A failed probe: wait twice as long for the next.
        breaker.failed(first, Breaker::PROBE_MAX);
        assert!(matches!(breaker.plan(), Plan::WaitUntil(_)));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(breaker.plan(), Plan::Probe);
        assert!(breaker.worked(), "a working probe closes it");
        assert_eq!(breaker.plan(), Plan::Batch);
        assert!(!breaker.worked(), "already closed");
    }

    #[test]
    fn a_connection_probe_stops_counting_once_mail_fails_right_after_one() {
        let first = Duration::from_millis(50);
        let mut breaker = Breaker::default();
        breaker.failed(first, Breaker::PROBE_MAX);
        breaker.failed(first, Breaker::PROBE_MAX);
        assert!(breaker.connected(), "the relay takes connections again");
        // ...but refuses mail (421): the next failure says so.
        breaker.failed(first, Breaker::PROBE_MAX);
        breaker.failed(first, Breaker::PROBE_MAX);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(breaker.plan(), Plan::Probe);
        assert!(!breaker.connected(), "a connection no longer closes it");
        assert!(breaker.worked(), "an email does");
        breaker.failed(first, Breaker::PROBE_MAX);
        breaker.failed(first, Breaker::PROBE_MAX);
        assert!(breaker.connected(), "and connections count again");
    }
}
