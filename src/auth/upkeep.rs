//! Background work of every replica: keeping tenants and API keys
//! current, sharing tenant counts, purging old limit counters.

use std::time::Duration;

use super::{AuthService, limits};
use crate::{clock::millis, error::AuthError};

impl AuthService {
    /// Keeps this process's copies of tenants and API keys current: polls
    /// the change counters every `interval` and reloads what changed, and
    /// writes the gathered "last used" times every `flush_every` (and on
    /// stop).
    pub async fn sync_periodically(
        self,
        interval: Duration,
        flush_every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let inner = &self.inner;
        // Nothing seen yet: the first tick reloads both, closing the window
        // between the initial load and this task's start. (Counters are read
        // before reloading, so a change during a reload shows next tick.)
        let mut seen: Vec<(String, i64)> = Vec::new();
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            // Each step is bounded: a hung connection must not keep a
            // revoked key alive (keys go UNAVAILABLE once the copy is stale).
            let step = async {
                let now = inner.store.change_counters().await?;
                let changed = |name: &str| {
                    now.iter().find(|c| c.0 == name) != seen.iter().find(|c| c.0 == name)
                };
                if changed("tenants") {
                    inner.tenants.reload().await?;
                    // A new tenant's keys are ready before its first login.
                    for tenant in inner.tenants.all() {
                        inner
                            .keys
                            .ring(&tenant.id)
                            .await
                            .map_err(AuthError::Internal)?;
                    }
                }
                if changed("api_keys") {
                    inner.api_keys.reload().await?;
                } else {
                    // Nothing changed since the last reload: still current.
                    inner.api_keys.confirm_current();
                }
                Ok::<_, AuthError>(now)
            };
            match tokio::time::timeout(interval.max(Duration::from_secs(1)) * 2, step).await {
                Ok(Ok(now)) => {
                    seen = now;
                    crate::telemetry::DATABASE.worked();
                }
                Ok(Err(e)) => crate::telemetry::DATABASE.failed(&format!(
                    "syncing tenants and keys failed: {}",
                    e.cause_chain()
                )),
                Err(_) => crate::telemetry::DATABASE.failed(&"syncing tenants and keys timed out"),
            }
            let bound = interval.max(Duration::from_secs(1)) * 2;
            if tokio::time::timeout(bound, self.share_tenant_counts())
                .await
                .is_err()
            {
                tracing::warn!("sharing tenant counts timed out");
            }
            if last_flush.elapsed() >= flush_every {
                last_flush = tokio::time::Instant::now();
                if let Err(e) = inner.api_keys.flush_last_used().await {
                    tracing::warn!(error = %e.cause_chain(), "recording API key use failed");
                }
            }
        }
        if let Err(e) = inner.api_keys.flush_last_used().await {
            tracing::warn!(error = %e.cause_chain(), "recording API key use failed");
        }
        self.share_tenant_counts().await;
    }

    /// Adds this replica's sign-in emails of the minute to each tenant's
    /// shared count and reads back every replica's total (the tenant
    /// ceiling). One statement per tenant served this minute.
    async fn share_tenant_counts(&self) {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        for flush in inner.ceiling.take(now) {
            let total = inner
                .store
                .add_to_counter(
                    &flush.tenant_id,
                    limits::TENANT_KEY,
                    flush.window_start,
                    i32::try_from(flush.count).unwrap_or(i32::MAX),
                    now,
                )
                .await;
            if let Err(e) = &total {
                tracing::warn!(error = %e, "sharing a tenant's count failed");
            }
            inner.ceiling.settle(&flush, total.ok());
        }
    }

    /// Deletes rate-limit counters whose window has ended, expired
    /// idempotency keys and expired passkey ceremonies, every `interval`.
    /// Any replica may do it (deletes are idempotent); the limits never read
    /// a row this removes, and a Finish refuses an expired ceremony anyway.
    pub async fn purge_periodically(
        self,
        longest_window: Duration,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let inner = &self.inner;
        let keep = millis(longest_window.max(limits::FAILURE_WINDOW));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = inner.clock.now_ms();
            match inner.store.purge_limits(now - keep, now).await {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::debug!(rows, "purged old rate-limit counters and idempotency keys")
                }
                Err(e) => tracing::warn!(error = %e, "purging rate-limit counters failed"),
            }
            match inner.store.purge_ceremonies(now).await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "purged expired passkey ceremonies"),
                Err(e) => tracing::warn!(error = %e, "purging passkey ceremonies failed"),
            }
        }
    }
}
