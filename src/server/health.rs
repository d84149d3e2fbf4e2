//! Health: the gRPC health services and `/readyz`, the database check, and
//! the moment shutdown starts draining the listeners.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{Readiness, grpc::GrpcAuth},
    proto::auth_service_server::AuthServiceServer,
    store::Store,
};

/// The gRPC health service name that is SERVING for as long as the process
/// runs (liveness), whatever the database does.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The gRPC health service name that is SERVING while the database answers
/// and has every migration this binary needs. Readiness does not follow it:
/// see [`watch_database`].
pub const DATABASE_SERVICE: &str = "latchkey.database";

/// Resolves when the listeners should stop accepting and drain: once
/// shutdown has started, the service reported NOT_SERVING, and `delay` has
/// passed (time for load balancers to stop sending new calls here). Then
/// open health `Watch` streams end, so they do not hold the drain.
pub(super) async fn draining(shutdown: CancellationToken, health: Health, delay: Duration) {
    shutdown.cancelled().await;
    if health.stop().await {
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "shutting down: NOT_SERVING"
        );
    }
    tokio::time::sleep(delay).await;
    health.end_watches().await;
    tracing::debug!("draining in-flight calls");
}

/// Both health surfaces: gRPC `grpc.health.v1` and HTTP `/readyz`.
#[derive(Clone)]
pub(super) struct Health {
    pub(super) reporter: HealthReporter,
    pub(super) readiness: Readiness,
    /// Once shutdown begins, nothing makes the service ready again (set
    /// and stop are serialised by this lock, so a readiness check that
    /// finishes late cannot report SERVING after stop).
    pub(super) stopping: Arc<tokio::sync::Mutex<bool>>,
}

impl Health {
    /// Reports readiness, unless shutdown has begun.
    pub(super) async fn set(&self, ready: bool) {
        let stopping = self.stopping.lock().await;
        if !*stopping {
            self.apply(ready).await;
        }
    }

    /// Reports NOT_SERVING for good. True only for the first call.
    pub(super) async fn stop(&self) -> bool {
        let mut stopping = self.stopping.lock().await;
        let first = !*stopping;
        *stopping = true;
        if first {
            self.apply(false).await;
        }
        first
    }

    /// Ends open `Watch` streams of the readiness and database services (they would
    /// otherwise keep their connections, and the drain, open until the
    /// grace runs out). A later Check of them answers NOT_FOUND.
    pub(super) async fn end_watches(&self) {
        let mut reporter = self.reporter.clone();
        reporter
            .clear_service_status(
                <AuthServiceServer<GrpcAuth> as tonic::server::NamedService>::NAME,
            )
            .await;
        reporter.clear_service_status("").await;
        reporter.clear_service_status(DATABASE_SERVICE).await;
    }

    /// Reports whether the database answers (not readiness).
    pub(super) async fn database(&self, up: bool) {
        crate::metrics::database_up(up);
        let status = if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(DATABASE_SERVICE, status)
            .await;
    }

    pub(super) async fn apply(&self, ready: bool) {
        self.readiness.set(ready);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(
                <AuthServiceServer<GrpcAuth> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        self.reporter.set_service_status("", status).await;
    }
}

/// Checks the database every `interval` and reports what it finds, in the
/// `latchkey.database` health service, the `latchkey_database_up` gauge and
/// the log (at each change). Readiness does not follow it: every replica
/// shares the one database, so taking them out of the load balancer during
/// a database outage helps no call (those that need it answer UNAVAILABLE
/// at once either way) and takes down the ones that do not: JWKS, health,
/// the OpenAPI document.
pub(super) async fn watch_database(
    store: Store,
    health: Health,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut up = true;
    health.database(true).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Bounded: a check that hangs on a dead connection counts as a failure.
        let ready = tokio::time::timeout(interval.max(Duration::from_secs(1)), store.is_ready())
            .await
            .unwrap_or(false);
        if ready {
            crate::telemetry::DATABASE.worked();
        }
        if ready != up && !stop.is_cancelled() {
            up = ready;
            if ready {
                tracing::info!("database reachable again");
            } else {
                tracing::warn!(
                    "database unreachable or not migrated: calls that need it answer UNAVAILABLE"
                );
            }
            health.database(ready).await;
        }
    }
}
