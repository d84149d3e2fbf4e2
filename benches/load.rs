//! Load benchmark (not a test): `cargo bench --bench load [-- --help]`.
//!
//! Starts the release `latchkey` binary as its own process on a fresh
//! PostgreSQL database, with a real SMTP server (mailin-embedded) in this
//! process, then drives each RPC with a tonic client at a fixed concurrency
//! and reports throughput, latency percentiles, and the CPU seconds the
//! service and PostgreSQL spent per request (from /proc). With `pgbench` on
//! the PATH it also runs the same SQL statements each write RPC commits,
//! at the same connection count, and reports the service's throughput as a
//! share of that database-only ceiling (the target is >= 70 %).
//!
//! The tables are analyzed before the write scenarios (statistics taken
//! while the outbox queue is empty, as autovacuum leaves them between bursts),
//! and the email drain is measured with a backlog: StartAuth at full speed
//! queues faster than one worker sends, then the queue drains, once with the
//! statistics of the empty queue and once after analyzing the backlog.
//! Refresh also runs over the JSON gateway, and both Refresh runs report
//! PostgreSQL's checkpoints and autovacuums during them.
//!
//! Everything shares the machine's cores, as the performance targets prescribe; compare
//! ratios taken in one run, not absolute numbers across runs.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser;
use latchkey::proto::{self, auth_service_client::AuthServiceClient};
use mailin_embedded::{Handler, Response, response};
use tonic::transport::Channel;
use tonic::{service::Interceptor, service::interceptor::InterceptedService};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Parser, Debug)]
#[command(about = "latchkey load benchmark")]
struct Args {
    /// Admin URL of the PostgreSQL server; a database `latchkey_bench` is
    /// (re)created on it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Concurrent requests in flight (and database connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long each duration-based scenario runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Operations for the count-based scenarios (StartAuth, Verify).
    #[arg(long, default_value_t = 4000)]
    count: usize,
    /// Skip the pgbench comparison.
    #[arg(long)]
    no_pgbench: bool,
    /// Requests per second for the latency-at-half-load run of Refresh (0:
    /// half of the measured maximum).
    #[arg(long, default_value_t = 0)]
    half_rate: u64,
    // `cargo bench` passes `--bench`; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Adds the API key to every call.
#[derive(Clone)]
struct Key(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Key {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = AuthServiceClient<InterceptedService<Channel, Key>>;

#[derive(Default)]
struct Inbox {
    codes: Mutex<HashMap<String, String>>,
    /// When the SMTP server accepted the message to each recipient.
    accepted: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone)]
struct Sink {
    inbox: Arc<Inbox>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Sink {
    fn data_start(&mut self, _: &str, _: &str, _: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        let text = String::from_utf8_lossy(&self.data);
        let code = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        let now = Instant::now();
        let mut codes = self.inbox.codes.lock().unwrap();
        let mut accepted = self.inbox.accepted.lock().unwrap();
        for to in &self.to {
            codes.insert(to.clone(), code.clone());
            accepted.insert(to.clone(), now);
        }
        response::OK
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU seconds of every PostgreSQL server process.
fn postgres_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += cpu_seconds(pid);
        }
    }
    total
}

fn rss_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Measured {
    name: &'static str,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    server_cpu: f64,
    pg_cpu: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    }
    fn print(&self) {
        println!(
            "{:<22} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server {:>5.0} µs/req  postgres {:>5.0} µs/req  errors {}",
            self.name,
            self.rate(),
            self.pct(0.50),
            self.pct(0.99),
            self.server_cpu / self.ops.max(1) as f64 * 1e6,
            self.pg_cpu / self.ops.max(1) as f64 * 1e6,
            self.errors
        );
    }
}

/// Runs `op(worker, i)` from `concurrency` workers until `count` operations
/// are done or `duration` has passed, whichever comes first. With `rate`,
/// requests start on a fixed schedule (open loop) instead of back to back.
async fn drive<F, Fut>(
    name: &'static str,
    server_pid: u32,
    concurrency: usize,
    count: usize,
    duration: Duration,
    rate: Option<f64>,
    op: F,
) -> Measured
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu0 = (cpu_seconds(server_pid), postgres_cpu_seconds());
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    return (lat, errors);
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                if op(w, i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    Measured {
        name,
        ops: latencies.len(),
        errors,
        elapsed,
        latencies,
        server_cpu: cpu_seconds(server_pid) - cpu0.0,
        pg_cpu: postgres_cpu_seconds() - cpu0.1,
    }
}

async fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args([url, "-qAtc", sql])
        .status()
        .expect("psql on the PATH");
    assert!(status.success(), "psql failed: {sql}");
}

/// The single value `sql` returns.
fn psql_value(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .expect("psql on the PATH");
    assert!(out.status.success(), "psql failed: {sql}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn queued_mail(url: &str) -> i64 {
    psql_value(url, "SELECT count(*) FROM outbox WHERE state = 'queued'")
        .parse()
        .unwrap()
}

/// PostgreSQL's own background work so far: checkpoints, and autovacuum /
/// autoanalyze runs on the tables the write RPCs update.
fn pg_background(url: &str) -> [i64; 3] {
    let row = psql_value(
        url,
        // (PostgreSQL 17 moved the checkpoint counts out of pg_stat_bgwriter: -1.)
        "SELECT (SELECT COALESCE((j->>'checkpoints_timed')::bigint + (j->>'checkpoints_req')::bigint, -1) \
                 FROM (SELECT to_jsonb(b) AS j FROM pg_stat_bgwriter b) x) || ' ' || \
         (SELECT COALESCE(SUM(autovacuum_count), 0) FROM pg_stat_user_tables) || ' ' || \
         (SELECT COALESCE(SUM(autoanalyze_count), 0) FROM pg_stat_user_tables)",
    );
    let mut n = row.split_whitespace().map(|v| v.parse().unwrap());
    [(); 3].map(|_| n.next().unwrap())
}

/// Queues StartAuth mail at full speed for `duration` (faster than the
/// worker sends), then waits for the queue to empty. With `analyze_backlog`
/// the tables are analyzed once the backlog is there, before the drain.
#[allow(clippy::too_many_arguments)]
async fn email_drain(
    label: &'static str,
    prefix: &'static str,
    pid: u32,
    c: usize,
    duration: Duration,
    client: &Client,
    db_url: &str,
    analyze_backlog: bool,
) {
    let sent_before = psql_value(db_url, "SELECT count(*) FROM outbox WHERE state = 'sent'")
        .parse::<i64>()
        .unwrap();
    let queuer = client.clone();
    let queued = drive(label, pid, c, usize::MAX, duration, None, move |_, i| {
        let mut g = queuer.clone();
        async move {
            g.start_auth(proto::StartAuthRequest {
                email: format!("{prefix}{i}@bench.example"),
                method: proto::Method::Code as i32,
                ..Default::default()
            })
            .await
            .is_ok()
        }
    })
    .await;
    queued.print();
    if analyze_backlog {
        psql(db_url, "VACUUM ANALYZE").await;
    }
    let backlog = queued_mail(db_url);
    let sent_during = psql_value(db_url, "SELECT count(*) FROM outbox WHERE state = 'sent'")
        .parse::<i64>()
        .unwrap()
        - sent_before;
    let start = Instant::now();
    loop {
        if queued_mail(db_url) == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the backlog never drained ({} left)",
            queued_mail(db_url)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = start.elapsed().as_secs_f64();
    println!(
        "email drain, {}: {} queued in {:.1} s, {} sent meanwhile ({:.0}/s); backlog of {} drained in {:.1} s: {:.0}/s",
        if analyze_backlog {
            "statistics of the backlog"
        } else {
            "statistics of an empty queue"
        },
        queued.ops,
        queued.elapsed.as_secs_f64(),
        sent_during,
        sent_during as f64 / queued.elapsed.as_secs_f64(),
        backlog,
        drained,
        backlog as f64 / drained.max(1e-9),
    );
}

/// Runs pgbench with `script` and returns its transactions per second.
fn pgbench(url: &str, script: &str, concurrency: usize, duration: Duration) -> Option<f64> {
    let path = std::env::temp_dir().join(format!("latchkey-bench-{}.sql", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &duration.as_secs().max(1).to_string(),
            "-f",
            path.to_str().unwrap(),
            url,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

// The statements each write RPC commits, as the store runs them, with random
// existing keys (pgbench cannot follow the API's state machine).
const PGBENCH_START_AUTH: &str = r#"
BEGIN;
INSERT INTO rate_counters (tenant_id, key, window_start, count, last_at) VALUES ('default', 'send:' || md5(random()::text), 1, 1, 1) ON CONFLICT (tenant_id, key, window_start) DO UPDATE SET count = rate_counters.count + 1, last_at = excluded.last_at RETURNING key, count;
INSERT INTO auth_sessions (id, tenant_id, email, method, state, code_hash, link_hash, proof_expires_at, client_ip, user_agent, created_at, validation_url, locale, mail_kind) VALUES (gen_random_uuid()::text, 'default', 'pgbench@example.com', 'code', 'pending', sha256(random()::text::bytea), NULL, 9999999999999, NULL, NULL, 1, NULL, 'en', 'sign_in');
INSERT INTO outbox (id, tenant_id, session_id, kind, recipient, payload_sealed, state, attempts, next_attempt_at, created_at) VALUES (gen_random_uuid()::text, 'default', NULL, 'pgbench', 'pgbench@example.com', sha256(random()::text::bytea), 'sent', 0, 1, 1);
COMMIT;
"#;
const PGBENCH_VERIFY: &str = r#"
\set n random(1, 20000)
BEGIN;
UPDATE auth_sessions SET attempts = attempts + 1 WHERE id = 'pgb-' || :n AND tenant_id = 'default' RETURNING email, code_hash, attempts;
SELECT id, email, created_at FROM users WHERE tenant_id = 'default' AND email = 'pgb-' || :n || '@example.com';
UPDATE auth_sessions SET state = 'active', user_id = NULL, verified_at = 1, expires_at = 9999999999999, code_hash = NULL, link_hash = NULL WHERE id = 'pgb-' || :n AND tenant_id = 'default';
INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at) VALUES (sha256((random()::text || :n)::bytea), 'default', 'pgb-' || :n, 1);
COMMIT;
"#;
const PGBENCH_REFRESH: &str = r#"
\set n random(1, 20000)
BEGIN;
UPDATE refresh_tokens SET rotated_at = 2, successor_sealed = sha256(random()::text::bytea) WHERE token_hash = sha256(('pgb-' || :n)::bytea) AND tenant_id = 'default' RETURNING session_id;
UPDATE auth_sessions SET last_refreshed_at = 2 WHERE id = 'pgb-' || :n AND tenant_id = 'default' AND state = 'active' AND expires_at > 2 RETURNING user_id, email, expires_at;
INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at) VALUES (sha256((random()::text || clock_timestamp()::text)::bytea), 'default', 'pgb-' || :n, 2);
COMMIT;
"#;
const PGBENCH_SEED: &str = "INSERT INTO auth_sessions (id, tenant_id, email, method, state, attempts, proof_expires_at, expires_at, created_at) \
    SELECT 'pgb-' || n, 'default', 'pgb-' || n || '@example.com', 'code', 'active', 0, 9999999999999, 9999999999999, 1 FROM generate_series(1, 20000) n; \
    INSERT INTO refresh_tokens (token_hash, tenant_id, session_id, created_at) \
    SELECT sha256(('pgb-' || n)::bytea), 'default', 'pgb-' || n, 1 FROM generate_series(1, 20000) n;";

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let admin = args.database_url.clone();
    let db_url = format!("{}/latchkey_bench", admin.rsplit_once('/').unwrap().0);
    psql(
        &admin,
        "DROP DATABASE IF EXISTS latchkey_bench WITH (FORCE)",
    )
    .await;
    psql(&admin, "CREATE DATABASE latchkey_bench").await;

    // A real SMTP server in this process.
    let inbox = Arc::new(Inbox::default());
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_addr = smtp.local_addr().unwrap();
    let mut server = mailin_embedded::Server::new(Sink {
        inbox: inbox.clone(),
        to: Vec::new(),
        data: Vec::new(),
    });
    server.with_tcp_listener(smtp).with_num_threads(32);
    std::thread::spawn(move || {
        let _ = server.serve();
    });

    // The service, as its own process, and an API key for it.
    let port = free_port();
    let http_port = free_port();
    let data_dir: PathBuf =
        std::env::temp_dir().join(format!("latchkey-bench-{}", std::process::id()));
    let made = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["apikey", "create", "--name", "load benchmark"])
        .env("LATCHKEY_DATABASE_URL", &db_url)
        .env("LATCHKEY_DATA_DIR", &data_dir)
        .env("LATCHKEY_LOG", "warn")
        .output()
        .expect("the latchkey binary");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .env("LATCHKEY_DATABASE_URL", &db_url)
        .env(
            "LATCHKEY_DATABASE_MAX_CONNECTIONS",
            args.concurrency.to_string(),
        )
        .env("LATCHKEY_GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        // Unused here: any free port, so nothing else on the host is in the way.
        .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_SMTP_URL", format!("smtp://{smtp_addr}"))
        .env("LATCHKEY_DATA_DIR", &data_dir)
        .env("LATCHKEY_LOG", "warn")
        // Limits stay on (their cost is part of StartAuth) but out of reach.
        .env("LATCHKEY_RATE_LIMIT_TENANT", "1000000000")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the latchkey binary");
    let pid = child.id();
    let endpoint = format!("http://127.0.0.1:{port}");
    let channel = loop {
        match Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let client: Client = AuthServiceClient::with_interceptor(
        channel.clone(),
        Key(format!("Bearer {key}").parse().unwrap()),
    );
    let c = args.concurrency;
    println!(
        "latchkey load benchmark: concurrency {c}, {:?} per timed scenario, {} ops per counted scenario, PostgreSQL {db_url}",
        args.duration, args.count
    );

    // Baseline: the cheapest tonic call there is (health check).
    let health = HealthClient::new(channel.clone());
    let baseline = drive(
        "health Check (baseline)",
        pid,
        c,
        usize::MAX,
        args.duration,
        None,
        move |_, _| {
            let mut h = health.clone();
            async move {
                h.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
            }
        },
    )
    .await;
    baseline.print();

    let jwks_client = client.clone();
    let jwks = drive(
        "GetJwks",
        pid,
        c,
        usize::MAX,
        args.duration,
        None,
        move |_, _| {
            let mut g = jwks_client.clone();
            async move { g.get_jwks(proto::GetJwksRequest::default()).await.is_ok() }
        },
    )
    .await;
    jwks.print();

    // Email latency, idle: StartAuth returning -> the SMTP server accepting.
    let returned: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (idle_client, idle_returned) = (client.clone(), returned.clone());
    drive(
        "StartAuth (idle, 20/s)",
        pid,
        1,
        200,
        Duration::from_secs(3600),
        Some(20.0),
        move |_, i| {
            let mut g = idle_client.clone();
            let returned = idle_returned.clone();
            async move {
                let email = format!("idle{i}@bench.example");
                let ok = g
                    .start_auth(proto::StartAuthRequest {
                        email: email.clone(),
                        method: proto::Method::Code as i32,
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                returned.lock().unwrap().insert(email, Instant::now());
                ok
            }
        },
    )
    .await;
    let idle_mail = mail_latency(&inbox, &returned, "idle").await;

    // What autovacuum does between bursts: statistics taken now, while the
    // outbox queue is empty (the outbox plans must not depend on them).
    psql(&db_url, "VACUUM ANALYZE").await;

    // StartAuth: distinct addresses; the worker sends every mail meanwhile.
    let start_client = client.clone();
    let load_returned: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let recorder = load_returned.clone();
    let start = drive(
        "StartAuth",
        pid,
        c,
        args.count,
        Duration::from_secs(3600),
        None,
        move |_, i| {
            let mut g = start_client.clone();
            let recorder = recorder.clone();
            async move {
                let email = format!("user{i}@bench.example");
                let ok = g
                    .start_auth(proto::StartAuthRequest {
                        email: email.clone(),
                        method: proto::Method::Code as i32,
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                recorder.lock().unwrap().insert(email, Instant::now());
                ok
            }
        },
    )
    .await;
    let loaded_mail = mail_latency(&inbox, &load_returned, "under load").await;
    start.print();

    // The email drain with a backlog, with the statistics of an empty queue,
    // then with statistics that saw the backlog.
    email_drain(
        "StartAuth (queueing a backlog)",
        "backlog",
        pid,
        c,
        args.duration,
        &client,
        &db_url,
        false,
    )
    .await;
    psql(&db_url, "VACUUM ANALYZE").await;
    email_drain(
        "StartAuth (queueing a backlog, analyzed)",
        "analyzed",
        pid,
        c,
        args.duration,
        &client,
        &db_url,
        true,
    )
    .await;

    // Wait for the codes of those sessions (the session ids were not kept:
    // start a fresh set whose ids we keep).
    let mut sessions = Vec::with_capacity(args.count);
    {
        let mut g = client.clone();
        for i in 0..args.count {
            let r = g
                .start_auth(proto::StartAuthRequest {
                    email: format!("verify{i}@bench.example"),
                    method: proto::Method::Code as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            sessions.push((format!("verify{i}@bench.example"), r.session_id));
        }
    }
    let wait_start = Instant::now();
    loop {
        let have = {
            let codes = inbox.codes.lock().unwrap();
            sessions
                .iter()
                .filter(|(e, _)| codes.contains_key(e))
                .count()
        };
        if have == sessions.len() {
            break;
        }
        assert!(
            wait_start.elapsed() < Duration::from_secs(300),
            "mail never arrived ({have})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let codes = inbox.codes.lock().unwrap().clone();
    let work: Arc<Vec<(String, String)>> = Arc::new(
        sessions
            .iter()
            .map(|(e, sid)| (sid.clone(), codes[e].clone()))
            .collect(),
    );
    let tokens: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; c]));
    let (verify_client, verify_work, verify_tokens) =
        (client.clone(), work.clone(), tokens.clone());
    let verify = drive(
        "Verify",
        pid,
        c,
        work.len(),
        Duration::from_secs(3600),
        None,
        move |w, i| {
            let mut g = verify_client.clone();
            let (sid, code) = verify_work[i].clone();
            let tokens = verify_tokens.clone();
            async move {
                match g
                    .verify(proto::VerifyRequest {
                        session_id: sid,
                        code,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => {
                        tokens.lock().unwrap()[w] = Some(r.into_inner().refresh_token);
                        true
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    verify.print();

    // Refresh: each worker rotates its own token chain back to back. Its
    // tail latency is reported with PostgreSQL's background work during the
    // run (see docs/benchmarks.md on the Refresh p99).
    let before = pg_background(&db_url);
    let refresh = run_refresh("Refresh", pid, c, args.duration, None, &client, &tokens).await;
    refresh.print();
    let after = pg_background(&db_url);
    println!(
        "           during the run: {} checkpoint(s), {} autovacuum(s), {} autoanalyze(s); slowest {:.2} ms",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        refresh.pct(1.0)
    );
    // The same over the JSON gateway (16 keep-alive HTTP/1.1 connections),
    // where the issue saw the tail.
    let before = pg_background(&db_url);
    let refresh_http = run_refresh_http(
        "Refresh (JSON gateway)",
        pid,
        c,
        args.duration,
        &format!("http://127.0.0.1:{http_port}/auth/refresh"),
        &key,
        &tokens,
    )
    .await;
    refresh_http.print();
    let after = pg_background(&db_url);
    println!(
        "           during the run: {} checkpoint(s), {} autovacuum(s), {} autoanalyze(s); slowest {:.2} ms",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        refresh_http.pct(1.0)
    );
    let half = if args.half_rate > 0 {
        args.half_rate as f64
    } else {
        refresh.rate() / 2.0
    };
    let refresh_half = run_refresh(
        "Refresh @ half load",
        pid,
        c,
        args.duration,
        Some(half),
        &client,
        &tokens,
    )
    .await;
    refresh_half.print();

    println!();
    println!(
        "GetJwks server CPU / baseline call: {:.2}x (target <= 1.5x)",
        (jwks.server_cpu / jwks.ops as f64) / (baseline.server_cpu / baseline.ops as f64)
    );
    for m in [&start, &verify, &refresh] {
        println!(
            "{:<10} server CPU / PostgreSQL CPU per request: {:.2} (target < 1)",
            m.name,
            m.server_cpu / m.pg_cpu.max(1e-9)
        );
    }
    println!(
        "Refresh p99 at half load ({half:.0}/s): {:.2} ms (target <= 10 ms)",
        refresh_half.pct(0.99)
    );
    for (what, l) in [
        ("idle, 20/s", &idle_mail),
        ("during the StartAuth run", &loaded_mail),
    ] {
        println!(
            "email latency (StartAuth returned -> SMTP accepted), {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p50 < 100 ms idle)",
            pct(l, 0.50),
            pct(l, 0.99),
            pct(l, 1.0)
        );
    }
    println!(
        "service RSS: now {:.1} MB, peak {:.1} MB (target <= 50 MB)",
        rss_mb(pid, "VmRSS:"),
        rss_mb(pid, "VmHWM:")
    );

    if !args.no_pgbench && Command::new("pgbench").arg("--version").output().is_ok() {
        psql(&db_url, PGBENCH_SEED).await;
        println!();
        for (m, script) in [
            (&start, PGBENCH_START_AUTH),
            (&verify, PGBENCH_VERIFY),
            (&refresh, PGBENCH_REFRESH),
        ] {
            match pgbench(&db_url, script, c, args.duration) {
                Some(tps) => println!(
                    "{:<10} pgbench (same statements, {c} connections): {tps:>8.0}/s; service reaches {:.0} % (target >= 70 %)",
                    m.name,
                    m.rate() / tps * 100.0
                ),
                None => println!("{:<10} pgbench failed", m.name),
            }
        }
    }

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
    psql(
        &admin,
        "DROP DATABASE IF EXISTS latchkey_bench WITH (FORCE)",
    )
    .await;
}

/// Waits for every recorded email and returns StartAuth->SMTP latencies.
async fn mail_latency(
    inbox: &Inbox,
    returned: &Mutex<HashMap<String, Instant>>,
    what: &str,
) -> Vec<Duration> {
    let want: Vec<(String, Instant)> = returned.lock().unwrap().clone().into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let accepted = inbox.accepted.lock().unwrap().clone();
        if want.iter().all(|(e, _)| accepted.contains_key(e)) {
            let mut out: Vec<Duration> = want
                .iter()
                .map(|(e, t)| accepted[e].saturating_duration_since(*t))
                .collect();
            out.sort();
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "emails ({what}) never all arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run_refresh(
    name: &'static str,
    pid: u32,
    c: usize,
    duration: Duration,
    rate: Option<f64>,
    client: &Client,
    tokens: &Arc<Mutex<Vec<Option<String>>>>,
) -> Measured {
    let (client, tokens) = (client.clone(), tokens.clone());
    drive(name, pid, c, usize::MAX, duration, rate, move |w, _| {
        let mut g = client.clone();
        let tokens = tokens.clone();
        async move {
            let Some(token) = tokens.lock().unwrap()[w].clone() else {
                return false;
            };
            match g
                .refresh(proto::RefreshRequest {
                    refresh_token: token,
                })
                .await
            {
                Ok(r) => {
                    tokens.lock().unwrap()[w] = Some(r.into_inner().refresh_token);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await
}

async fn run_refresh_http(
    name: &'static str,
    pid: u32,
    c: usize,
    duration: Duration,
    url: &str,
    key: &str,
    tokens: &Arc<Mutex<Vec<Option<String>>>>,
) -> Measured {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();
    let (url, bearer, tokens) = (url.to_owned(), format!("Bearer {key}"), tokens.clone());
    drive(name, pid, c, usize::MAX, duration, None, move |w, _| {
        let (http, url, bearer, tokens) =
            (http.clone(), url.clone(), bearer.clone(), tokens.clone());
        async move {
            let Some(token) = tokens.lock().unwrap()[w].clone() else {
                return false;
            };
            let Ok(response) = http
                .post(&url)
                .header("authorization", bearer)
                .json(&serde_json::json!({ "refreshToken": token }))
                .send()
                .await
            else {
                return false;
            };
            if !response.status().is_success() {
                return false;
            }
            let Ok(body) = response.json::<serde_json::Value>().await else {
                return false;
            };
            match body["refreshToken"].as_str() {
                Some(next) => {
                    tokens.lock().unwrap()[w] = Some(next.to_owned());
                    true
                }
                None => false,
            }
        }
    })
    .await
}
