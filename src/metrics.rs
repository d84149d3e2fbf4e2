//! Prometheus metrics: one process-wide recorder (the `metrics` facade),
//! rendered as Prometheus text at `GET /metrics` on a listener of its own
//! (`LATCHKEY_METRICS_ADDR`), never the gateway's: the counts describe every
//! tenant's traffic, so only the monitoring system should reach them.
//!
//! Label values come from small fixed sets (RPC names, machine codes,
//! results): never an email, an id or a tenant.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::Store;

/// RPC calls, by `transport` (grpc, http), `method` and `code`.
pub const RPC_REQUESTS: &str = "latchkey_rpc_requests_total";
/// RPC latency in seconds, by the same labels.
pub const RPC_DURATION: &str = "latchkey_rpc_duration_seconds";
/// StartAuth calls that started a login, by `method` (code, link, code_and_link).
pub const LOGINS_STARTED: &str = "latchkey_logins_started_total";
/// ResendCode calls that sent a login's email again.
pub const CODES_RESENT: &str = "latchkey_codes_resent_total";
/// Verify calls, by `proof` (code, link) and `result` (ok, invalid, expired,
/// too_many_attempts, rate_limited, bad_input, error).
pub const VERIFICATIONS: &str = "latchkey_verifications_total";
/// Refresh calls, by `result` (ok, retried, invalid, reused, bad_input, error).
pub const REFRESHES: &str = "latchkey_refreshes_total";
/// Passkey ceremonies finished, by `ceremony` (registration, login) and
/// `result` (ok, invalid, ceremony_invalid, counter_regressed,
/// access_token_invalid, rate_limited, not_configured, bad_input, error).
pub const PASSKEY_CEREMONIES: &str = "latchkey_passkey_ceremonies_total";
/// Passkeys whose signature counter went backwards (a possible clone),
/// refused and marked, by `action` (refused).
pub const PASSKEY_COUNTER_REGRESSIONS: &str = "latchkey_passkey_counter_regressions_total";
/// Calls refused by a limit, by `limit` (email, ip, tenant, wrong_codes).
pub const RATE_LIMITED: &str = "latchkey_rate_limited_total";
/// Emails, by `event` (queued, sent, retried, dead).
pub const EMAILS: &str = "latchkey_emails_total";
/// Emails waiting to be sent (all replicas).
pub const OUTBOX_DEPTH: &str = "latchkey_outbox_depth";
/// Age in seconds of the oldest email waiting (0 when none).
pub const OUTBOX_OLDEST_AGE: &str = "latchkey_outbox_oldest_age_seconds";
/// This process's database connections, by `state` (in_use, idle).
pub const DB_CONNECTIONS: &str = "latchkey_db_connections";
/// This process's database pool size limit.
pub const DB_CONNECTIONS_MAX: &str = "latchkey_db_connections_max";
/// 1 while the database answers this process's periodic check (and has
/// every migration it needs), 0 otherwise.
pub const DATABASE_UP: &str = "latchkey_database_up";
/// Database calls abandoned at their deadline (no answer: the connection
/// went silent), by `operation` (the store method).
pub const DB_TIMEOUTS: &str = "latchkey_db_timeouts_total";

/// Latency buckets (seconds): sub-millisecond reads to slow writes.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. (If another recorder was
/// installed first, metrics go there and this one renders nothing.)
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RPC_DURATION.to_owned()), BUCKETS)
            .expect("non-empty buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS,
        "RPC calls by transport, method and result code."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "RPC latency by transport, method and result code."
    );
    describe_counter!(LOGINS_STARTED, "Logins started, by method.");
    describe_counter!(CODES_RESENT, "Login emails sent again (ResendCode).");
    describe_counter!(VERIFICATIONS, "Verifications by proof and result.");
    describe_counter!(
        REFRESHES,
        "Refreshes by result (reused: the session was ended)."
    );
    describe_counter!(
        PASSKEY_CEREMONIES,
        "Passkey registrations and logins finished, by ceremony and result."
    );
    describe_counter!(
        PASSKEY_COUNTER_REGRESSIONS,
        "Passkeys refused and marked because their signature counter went backwards."
    );
    describe_counter!(RATE_LIMITED, "Calls refused by a limit, by limit.");
    describe_counter!(EMAILS, "Emails by event: queued, sent, retried, dead.");
    describe_gauge!(OUTBOX_DEPTH, "Emails waiting to be sent, all replicas.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest email waiting to be sent."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "This process's database connections by state."
    );
    describe_gauge!(
        DB_CONNECTIONS_MAX,
        "This process's database pool size limit."
    );
    describe_gauge!(
        DATABASE_UP,
        "1 while the database answers this process's check, 0 otherwise."
    );
    describe_counter!(
        DB_TIMEOUTS,
        "Database calls abandoned without an answer, by operation."
    );
}

/// Installs the recorder (so counting starts with the first call, not the
/// first scrape) and folds the recorded latencies into their buckets every
/// 5 s until `stop`: the recorder keeps every raw sample until then, so
/// without a scrape memory would grow with every call.
pub fn upkeep_periodically(
    stop: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // Installed now, before any call can be served.
    let handle = handle();
    async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    }
}

/// Counts one finished RPC.
pub fn rpc(transport: &'static str, method: &'static str, code: &'static str, elapsed: Duration) {
    let labels = [("transport", transport), ("method", method), ("code", code)];
    metrics::counter!(RPC_REQUESTS, &labels).increment(1);
    metrics::histogram!(RPC_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// Whether the database answers this process's check.
pub fn database_up(up: bool) {
    // (Set first at start-up, maybe before anything else installed it.)
    handle();
    metrics::gauge!(DATABASE_UP).set(if up { 1.0 } else { 0.0 });
}

/// Adds one to a counter with one label.
pub fn count(name: &'static str, label: &'static str, value: &'static str) {
    metrics::counter!(name, label => value).increment(1);
}

/// Adds `n` to a counter with one label.
pub fn count_n(name: &'static str, label: &'static str, value: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(name, label => value).increment(n);
    }
}

/// The metrics as Prometheus text, with the gauges read now: the outbox
/// (one indexed query; left as they were if the database does not answer
/// within a second) and this process's pool.
pub async fn render(store: &Store, now_ms: i64) -> String {
    let handle = handle();
    let pool = store.pool_usage();
    metrics::gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(pool.in_use));
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!(DB_CONNECTIONS_MAX).set(f64::from(pool.max));
    if let Ok(Ok((depth, oldest))) =
        tokio::time::timeout(Duration::from_secs(1), store.outbox_backlog()).await
    {
        metrics::gauge!(OUTBOX_DEPTH).set(depth as f64);
        let age = oldest.map_or(0, |at| (now_ms - at).max(0));
        metrics::gauge!(OUTBOX_OLDEST_AGE).set(age as f64 / 1000.0);
    }
    handle.run_upkeep();
    handle.render()
}

/// The metrics listener's routes: `GET /metrics` (Prometheus text).
pub fn router(store: Store, clock: crate::clock::Clock) -> axum::Router {
    use axum::{http::header, response::IntoResponse, routing::get};
    let scrape = move || {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            let text = render(&store, clock.now_ms()).await;
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
    };
    axum::Router::new().route("/metrics", get(scrape))
}
