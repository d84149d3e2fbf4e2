//! Abuse limits, shared by every replica through the database: fixed-window
//! counters for sign-in emails per address and starts per client IP, a
//! per-tenant ceiling, and a budget of wrong codes per address that survives
//! new codes.
//!
//! The per-address and per-IP counters are upserted inside the StartAuth (or
//! Verify) transaction: exact, and a refused call writes nothing. Each is
//! its own row, so calls wait on each other only for the same address or IP.
//! The tenant ceiling cannot work that way (every call of a tenant would
//! queue on one row, and a row updated thousands of times a second bloats):
//! each replica counts its own calls in memory ([`TenantCeiling`]) and adds
//! them to a shared row about once a second, reading back the total of all
//! replicas. It is approximate by design: it can overshoot by about a second
//! of traffic per replica.
//!
//! A key found over its limit is remembered until its window ends
//! ([`Refusals`]), so a flood of refused calls costs no database work.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::{UnixMillis, millis};

/// The tenant ceiling's window.
pub const TENANT_WINDOW: Duration = Duration::from_secs(60);

/// The key of the tenant ceiling's shared row.
pub const TENANT_KEY: &str = "tenant";

/// The fixed window of wrong-code budgets.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// A tenant's limits (0 = no limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub window: Duration,
    pub per_email: u32,
    pub per_ip: u32,
    pub per_tenant_minute: u32,
    pub failure_budget: u32,
    pub backoff_max: Duration,
}

/// The start of the fixed window `now` falls in.
pub fn window_start(now: UnixMillis, window: Duration) -> UnixMillis {
    let w = millis(window).max(1);
    now - now.rem_euclid(w)
}

/// One counter a call increments, and what it may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub window_start: UnixMillis,
    pub window: Duration,
    pub limit: u32,
}

impl Counter {
    /// The limit this counter enforces, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self.key.split(':').next() {
            Some("send") => "email",
            Some("ip") => "ip",
            Some("fail") => "wrong_codes",
            _ => "other",
        }
    }

    /// Milliseconds until this counter's window ends.
    pub fn retry_after(&self, now: UnixMillis) -> Duration {
        let end = self.window_start + millis(self.window);
        Duration::from_millis(u64::try_from(end - now).unwrap_or(0).max(1))
    }
}

/// Keys of counters derived from an address: a keyed hash, so the table
/// never holds addresses in clear.
pub struct KeyHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher([redacted])")
    }
}

impl KeyHasher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn address(&self, email: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(email.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The counters a sign-in email increments in its transaction
    /// (StartAuth, ResendCode): per address, and per client IP (StartAuth
    /// only; IPv6 by /64, the block one subscriber usually holds).
    pub fn for_send(
        &self,
        limits: &Limits,
        email: &str,
        ip: Option<IpAddr>,
        now: UnixMillis,
    ) -> Vec<Counter> {
        let mut out = Vec::new();
        let window = window_start(now, limits.window);
        if limits.per_email > 0 {
            out.push(Counter {
                key: format!("send:{}", self.address(email)),
                window_start: window,
                window: limits.window,
                limit: limits.per_email,
            });
        }
        if let Some(ip) = ip
            && limits.per_ip > 0
        {
            out.push(Counter {
                key: format!("ip:{}", ip_block(ip)),
                window_start: window,
                window: limits.window,
                limit: limits.per_ip,
            });
        }
        out
    }

    /// The wrong-code counter of an address.
    pub fn for_failures(&self, limits: &Limits, email: &str, now: UnixMillis) -> Option<Counter> {
        (limits.failure_budget > 0).then(|| Counter {
            key: format!("fail:{}", self.address(email)),
            window_start: window_start(now, FAILURE_WINDOW),
            window: FAILURE_WINDOW,
            limit: limits.failure_budget,
        })
    }
}

/// What the per-IP limit counts: an IPv4 address (also when written as
/// IPv4-mapped IPv6), or the /64 of an IPv6 address.
fn ip_block(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The tenant ceiling as one replica sees it: its own calls of the current
/// minute not yet added to the shared row, and the shared total as last
/// read. A call is refused when the two together reach the limit.
#[derive(Debug, Default)]
pub struct TenantCeiling {
    tenants: Mutex<HashMap<String, CeilingCount>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct CeilingCount {
    window_start: UnixMillis,
    /// Counted here, not yet sent.
    local: u32,
    /// Sent, the total not yet read back.
    sending: u32,
    /// Every replica's total, as last read.
    shared: i64,
}

/// A replica's calls to add to a tenant's shared total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeilingFlush {
    pub tenant_id: String,
    pub window_start: UnixMillis,
    pub count: u32,
}

impl TenantCeiling {
    fn with<T>(
        &self,
        tenant_id: &str,
        now: UnixMillis,
        f: impl FnOnce(&mut CeilingCount) -> T,
    ) -> T {
        let window = window_start(now, TENANT_WINDOW);
        let mut tenants = self.tenants.lock().expect("ceiling lock");
        let count = tenants.entry(tenant_id.to_owned()).or_default();
        if count.window_start != window {
            *count = CeilingCount {
                window_start: window,
                ..CeilingCount::default()
            };
        }
        f(count)
    }

    /// Whether one more call fits; the wait until the minute ends if not.
    pub fn check(&self, tenant_id: &str, limit: u32, now: UnixMillis) -> Result<(), Duration> {
        if limit == 0 {
            return Ok(());
        }
        self.with(tenant_id, now, |c| {
            let used = c.shared + i64::from(c.local) + i64::from(c.sending);
            if used >= i64::from(limit) {
                let end = c.window_start + millis(TENANT_WINDOW);
                Err(Duration::from_millis(
                    u64::try_from(end - now).unwrap_or(0).max(1),
                ))
            } else {
                Ok(())
            }
        })
    }

    /// Counts a call that went through (committed).
    pub fn record(&self, tenant_id: &str, now: UnixMillis) {
        self.with(tenant_id, now, |c| c.local += 1);
    }

    /// What to add to the shared rows now: every tenant seen this minute
    /// (with a count of 0 when only the others' total is wanted).
    pub fn take(&self, now: UnixMillis) -> Vec<CeilingFlush> {
        let window = window_start(now, TENANT_WINDOW);
        let mut tenants = self.tenants.lock().expect("ceiling lock");
        tenants.retain(|_, c| c.window_start >= window - millis(TENANT_WINDOW));
        tenants
            .iter_mut()
            .filter(|(_, c)| c.window_start == window || c.local > 0)
            .map(|(id, c)| {
                c.sending += c.local;
                let count = std::mem::take(&mut c.local);
                CeilingFlush {
                    tenant_id: id.clone(),
                    window_start: c.window_start,
                    count,
                }
            })
            .collect()
    }

    /// The shared total after adding `flush`, or `None` when adding failed
    /// (the count is kept for the next try).
    pub fn settle(&self, flush: &CeilingFlush, total: Option<i64>) {
        let mut tenants = self.tenants.lock().expect("ceiling lock");
        let Some(c) = tenants.get_mut(&flush.tenant_id) else {
            return;
        };
        if c.window_start != flush.window_start {
            return;
        }
        c.sending = c.sending.saturating_sub(flush.count);
        match total {
            Some(total) => c.shared = total,
            None => c.local += flush.count,
        }
    }
}

/// Keys known to be over their limit until their window ends. Once a fixed
/// window's counter has reached its limit every further call in it is
/// refused (refused calls are not counted, and counts never fall), so the
/// answer can be given from memory.
#[derive(Debug, Default)]
pub struct Refusals {
    until: Mutex<HashMap<String, UnixMillis>>,
}

/// Keys remembered at most (beyond that, refusals go to the database).
const MAX_REFUSALS: usize = 100_000;

impl Refusals {
    fn name(tenant_id: &str, counter: &Counter) -> String {
        format!(
            "{tenant_id}\u{0}{}\u{0}{}",
            counter.key, counter.window_start
        )
    }

    /// The wait, if one of `counters` is known to be over its limit.
    pub fn check(
        &self,
        tenant_id: &str,
        counters: &[Counter],
        now: UnixMillis,
    ) -> Option<(Duration, &'static str)> {
        let until = self.until.lock().expect("refusals lock");
        counters
            .iter()
            .filter_map(|c| {
                until
                    .get(&Self::name(tenant_id, c))
                    .map(|&end| (end, c.kind()))
            })
            .filter(|&(end, _)| end > now)
            .max_by_key(|&(end, _)| end)
            .map(|(end, kind)| {
                let wait = Duration::from_millis(u64::try_from(end - now).unwrap_or(1));
                (wait, kind)
            })
    }

    /// Remembers that `counter` is over its limit.
    pub fn remember(&self, tenant_id: &str, counter: &Counter, now: UnixMillis) {
        let mut until = self.until.lock().expect("refusals lock");
        if until.len() >= MAX_REFUSALS {
            until.retain(|_, &mut end| end > now);
            if until.len() >= MAX_REFUSALS {
                return;
            }
        }
        until.insert(
            Self::name(tenant_id, counter),
            counter.window_start + millis(counter.window),
        );
    }
}

/// How long to wait after the last wrong code once the budget is spent:
/// 1 s after the first extra failure, doubling, at most `max`.
pub fn backoff(failures: u32, budget: u32, max: Duration) -> Duration {
    if failures < budget {
        return Duration::ZERO;
    }
    let exponent = (failures - budget).min(30);
    Duration::from_secs(1u64 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            window: Duration::from_secs(900),
            per_email: 5,
            per_ip: 30,
            per_tenant_minute: 100,
            failure_budget: 10,
            backoff_max: Duration::from_secs(900),
        }
    }

    #[test]
    fn windows_are_fixed_and_aligned() {
        let w = Duration::from_secs(60);
        assert_eq!(window_start(125_000, w), 120_000);
        assert_eq!(window_start(120_000, w), 120_000);
        assert_eq!(window_start(179_999, w), 120_000);
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn send_counters_hash_the_address_and_skip_what_is_off() {
        let h = KeyHasher::new([3; 32]);
        let c = h.for_send(&limits(), "a@example.com", ip("203.0.113.9"), 1_000);
        assert_eq!(c.len(), 2);
        assert!(c[0].key.starts_with("send:") && !c[0].key.contains("example"));
        assert_eq!(c[1].key, "ip:203.0.113.9");
        assert_ne!(
            h.for_send(&limits(), "b@example.com", None, 1_000)[0].key,
            c[0].key
        );
        let off = Limits {
            per_email: 0,
            per_ip: 0,
            ..limits()
        };
        assert!(
            h.for_send(&off, "a@example.com", ip("::1"), 1_000)
                .is_empty()
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64_block_and_mapped_ipv4_as_ipv4() {
        let h = KeyHasher::new([3; 32]);
        let key = |text: &str| {
            h.for_send(&limits(), "a@example.com", ip(text), 1_000)[1]
                .key
                .clone()
        };
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
    }

    #[test]
    fn the_tenant_ceiling_counts_local_calls_and_the_shared_total() {
        let ceiling = TenantCeiling::default();
        let now = 120_000;
        for _ in 0..3 {
            assert!(ceiling.check("t", 5, now).is_ok());
            ceiling.record("t", now);
        }
        // Adding them: in flight they still count; then the total (with
        // another replica's 2) replaces them.
        let flush = ceiling.take(now);
        assert_eq!(
            flush,
            vec![CeilingFlush {
                tenant_id: "t".into(),
                window_start: 120_000,
                count: 3
            }]
        );
        ceiling.record("t", now);
        assert!(ceiling.check("t", 5, now).is_ok());
        ceiling.settle(&flush[0], Some(5));
        assert_eq!(ceiling.check("t", 6, now), Err(Duration::from_secs(60)));
        assert!(ceiling.check("t", 0, now).is_ok(), "0: no ceiling");
        assert!(ceiling.check("other", 1, now).is_ok());
        // A failed add keeps the count for the next one. (A tenant only
        // checked is sent with 0, to read the others' total.)
        let of_t = |flushes: Vec<CeilingFlush>| {
            assert_eq!(flushes.len(), 2, "{flushes:?}");
            flushes.into_iter().find(|f| f.tenant_id == "t").unwrap()
        };
        let flush = of_t(ceiling.take(now + 1));
        assert_eq!(flush.count, 1);
        ceiling.settle(&flush, None);
        assert_eq!(of_t(ceiling.take(now + 2)).count, 1);
        // A new minute starts from nothing.
        assert!(ceiling.check("t", 1, now + 60_000).is_ok());
    }

    #[test]
    fn refusals_are_remembered_until_their_window_ends() {
        let refusals = Refusals::default();
        let h = KeyHasher::new([3; 32]);
        let c = h.for_send(&limits(), "a@example.com", None, 100_000);
        assert_eq!(refusals.check("t", &c, 100_000), None);
        refusals.remember("t", &c[0], 100_000);
        assert_eq!(
            refusals.check("t", &c, 100_000),
            Some((Duration::from_millis(800_000), "email"))
        );
        assert_eq!(refusals.check("other", &c, 100_000), None);
        assert_eq!(refusals.check("t", &c, 900_000), None);
    }

    #[test]
    fn the_backoff_doubles_after_the_budget_up_to_the_cap() {
        let max = Duration::from_secs(900);
        assert_eq!(backoff(9, 10, max), Duration::ZERO);
        assert_eq!(backoff(10, 10, max), Duration::from_secs(1));
        assert_eq!(backoff(13, 10, max), Duration::from_secs(8));
        assert_eq!(backoff(40, 10, max), max);
    }

    #[test]
    fn retry_after_is_the_rest_of_the_window() {
        let c = &KeyHasher::new([0; 32]).for_send(&limits(), "a@example.com", None, 100_000)[0];
        assert_eq!(c.retry_after(100_000), Duration::from_millis(800_000));
    }
}
