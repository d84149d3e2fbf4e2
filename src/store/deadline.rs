//! The deadline on every database call, and the stalls it catches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// The bound on every database call: a statement (or a begin, a commit)
/// that gets no answer within it fails as unavailable, and its connection is
/// not reused. PostgreSQL itself cancels a statement at `statement_timeout`,
/// a second earlier, so this fires only when the answer cannot arrive: a
/// connection that went silent (a failover, a dropped route or conntrack
/// entry), which would otherwise hold the call, and any row locks it took,
/// for good.
#[derive(Clone, Debug)]
pub(super) struct Deadline {
    pub(super) after: Duration,
    pub(super) stalls: Arc<Stalls>,
}

/// When calls were last abandoned at their deadline. A connection given
/// back to the pool within [`Stalls::WINDOW`] of that is checked with a
/// bounded ping before reuse, so the one that went silent is closed rather
/// than pinged forever (the pool's own check has no bound) and kept out of
/// the pool's count for good. Other times nothing is checked.
#[derive(Debug)]
pub(super) struct Stalls {
    pub(super) epoch: std::time::Instant,
    /// Milliseconds after `epoch` until which released connections are
    /// checked (0: none).
    pub(super) check_until: AtomicU64,
}

impl Stalls {
    /// How long after an abandoned call released connections are checked.
    pub(super) const WINDOW: Duration = Duration::from_secs(30);
    /// How long that check may take.
    pub(super) const PING: Duration = Duration::from_secs(1);

    pub(super) fn new() -> Self {
        Self {
            epoch: std::time::Instant::now(),
            check_until: AtomicU64::new(0),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A call is being abandoned: check the connections released soon.
    pub(super) fn abandoned(&self) {
        let until = self.now_ms() + u64::try_from(Self::WINDOW.as_millis()).unwrap_or(0);
        self.check_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(super) fn checking(&self) -> bool {
        self.now_ms() < self.check_until.load(Ordering::Relaxed)
    }
}

impl Deadline {
    /// Runs one call's `work` within the deadline.
    pub(super) async fn bound<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> std::result::Result<T, sqlx::Error> {
        let watched = Watched {
            stalls: &self.stalls,
            done: false,
            work: Box::pin(work),
        };
        match tokio::time::timeout(self.after, watched).await {
            Ok(result) => result,
            Err(_) => {
                crate::metrics::count(crate::metrics::DB_TIMEOUTS, "operation", op);
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer from the database within {:?} ({op}): the connection is \
                         dropped",
                        self.after
                    ),
                )))
            }
        }
    }
}

/// A call's work; dropped unfinished, it marks the stall *before* the
/// connection it holds goes back to the pool (fields drop after `drop`).
pub(super) struct Watched<'a, F> {
    pub(super) stalls: &'a Stalls,
    pub(super) done: bool,
    pub(super) work: std::pin::Pin<Box<F>>,
}

impl<F: Future> Future for Watched<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let polled = self.work.as_mut().poll(cx);
        if polled.is_ready() {
            self.done = true;
        }
        polled
    }
}

impl<F> Drop for Watched<'_, F> {
    fn drop(&mut self) {
        if !self.done {
            self.stalls.abandoned();
        }
    }
}
