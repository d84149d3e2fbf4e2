//! The fault suite: two replicas (the real binary) share one PostgreSQL
//! database, each reaching it and the mail relay (a recording SMTP server)
//! through forwarders the test controls, while a driver runs full logins
//! (StartAuth, the email, Verify) through a load balancer that routes to
//! ready replicas and retries a refused connection on the other. Faults
//! come and go: the relay answers 421, refuses connections or is slow; the
//! database's connections are reset, blackholed, or one freezes in the
//! middle of an outbox claim; a replica is killed with SIGKILL; both are
//! restarted one after the other with SIGTERM; a refresh races across the
//! replicas. Each test asserts that every accepted StartAuth got exactly one
//! email and its code worked, that no call answered a 5xx other than 503,
//! and that service and email came back within stated seconds.
//!
//! `cargo test` runs short versions (faults of a few seconds).
//! `LATCHKEY_FAULTS_LONG=1 cargo test faults -- --nocapture` is the
//! pre-release run: the lengths of the original trial (relay faults of
//! 60 s, slow relays of 1.5, 5 and 10 s, database faults of 20 s) at four
//! logins a second, printing the figures docs/reliability.md records.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, Forwarder, Served, SmtpSink, TempDir, TestDb};

/// The key-encryption key every replica shares.
const KEK: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// The pre-release lengths, asked for with `LATCHKEY_FAULTS_LONG=1`.
fn long() -> bool {
    std::env::var("LATCHKEY_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// `ci` seconds, or `pre_release` seconds in the long run.
fn secs(ci: u64, pre_release: u64) -> Duration {
    Duration::from_secs(if long() { pre_release } else { ci })
}

/// Logins started per second.
fn rate() -> f64 {
    if long() { 4.0 } else { 3.0 }
}

/// How soon after a fault ends service and email must be back (generous:
/// the figures in docs/reliability.md are what it takes).
const RECOVERY: Duration = Duration::from_secs(15);

/// One replica: its data directory, its forwarders, its process.
struct Replica {
    dir: TempDir,
    db: Forwarder,
    /// The database URL through `db`.
    db_url: String,
    smtp: Forwarder,
    served: Option<Served>,
}

/// Two replicas, the database, the relay, the load balancer's view.
struct Cluster {
    db: TestDb,
    sink: SmtpSink,
    key: String,
    replicas: Vec<Replica>,
    routes: Routes,
    _balancer: tokio::task::JoinHandle<()>,
}

/// Where the load balancer sends calls: each replica's HTTP address while
/// it runs, and whether its readiness says to.
#[derive(Clone, Default)]
struct Routes(Arc<Mutex<Vec<Route>>>);

/// A replica's HTTP address while it runs, and whether it is ready.
type Route = (Option<String>, bool);

impl Routes {
    /// The replicas to use, the `turn`-th first.
    fn pick(&self, turn: usize) -> Vec<String> {
        let routes = self.0.lock().unwrap();
        let ready: Vec<String> = routes
            .iter()
            .filter_map(|(addr, ready)| addr.clone().filter(|_| *ready))
            .collect();
        (0..ready.len())
            .map(|i| ready[(turn + i) % ready.len()].clone())
            .collect()
    }
}

impl Cluster {
    async fn start() -> Self {
        let db = TestDb::new(Backend::Postgres).await;
        let sink = SmtpSink::start();
        let key = crate::helpers::create_key_with(
            &TempDir::new().path,
            &[
                ("LATCHKEY_DATABASE_URL", &db.url),
                ("LATCHKEY_KEY_ENCRYPTION_KEY", KEK),
            ],
        )
        .await;
        let routes = Routes::default();
        let balancer = tokio::spawn(balance(routes.clone()));
        let mut cluster = Self {
            db,
            sink,
            key,
            replicas: Vec::new(),
            routes,
            _balancer: balancer,
        };
        for _ in 0..2 {
            let (db_forwarder, db_url) = crate::server::forwarded(&cluster.db).await;
            let smtp = Forwarder::start(cluster.sink.addr).await;
            cluster.replicas.push(Replica {
                dir: TempDir::new(),
                db: db_forwarder,
                db_url,
                smtp,
                served: None,
            });
            cluster.routes.0.lock().unwrap().push((None, false));
        }
        for i in 0..2 {
            cluster.run(i).await;
        }
        cluster
    }

    /// Starts replica `i` (again).
    async fn run(&mut self, i: usize) {
        let replica = &self.replicas[i];
        // In clear, so a forwarder can see the outbox claims.
        let db_url = format!("{}?sslmode=disable", replica.db_url);
        let smtp_url = format!("smtp://{}", replica.smtp.addr);
        let mut envs = vec![
            ("LATCHKEY_DATABASE_URL", db_url),
            ("LATCHKEY_SMTP_URL", smtp_url),
            ("LATCHKEY_KEY_ENCRYPTION_KEY", KEK.to_owned()),
            ("LATCHKEY_RATE_LIMIT_EMAIL", "0".to_owned()),
            ("LATCHKEY_RATE_LIMIT_IP", "0".to_owned()),
            ("LATCHKEY_RATE_LIMIT_TENANT", "0".to_owned()),
            ("LATCHKEY_VERIFY_FAILURE_BUDGET", "0".to_owned()),
            ("LATCHKEY_READINESS_INTERVAL", "1s".to_owned()),
            ("LATCHKEY_SHUTDOWN_DELAY", "1s".to_owned()),
            ("LATCHKEY_SHUTDOWN_GRACE", "5s".to_owned()),
            ("LATCHKEY_LOG", "info".to_owned()),
        ];
        if !long() {
            // The defaults, shortened to fit seconds-long faults.
            envs.extend([
                ("LATCHKEY_OUTBOX_LEASE", "3s".to_owned()),
                ("LATCHKEY_DATABASE_STATEMENT_TIMEOUT", "2s".to_owned()),
                (
                    "LATCHKEY_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT",
                    "3s".to_owned(),
                ),
                ("LATCHKEY_DATABASE_ACQUIRE_TIMEOUT", "2s".to_owned()),
                ("LATCHKEY_SMTP_TIMEOUT", "2s".to_owned()),
            ]);
        }
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let served = Served::start(&replica.dir.path, &envs).await;
        self.routes.0.lock().unwrap()[i].0 = Some(served.http.clone());
        self.replicas[i].served = Some(served);
    }

    /// Kills replica `i` with SIGKILL.
    async fn kill(&mut self, i: usize) {
        self.routes.0.lock().unwrap()[i] = (None, false);
        self.replicas[i].served.take().unwrap().kill().await;
    }

    /// Stops replica `i` with SIGTERM and waits for it to exit; the load
    /// balancer stops routing to it once it says NOT_SERVING.
    async fn terminate(&mut self, i: usize) {
        let mut served = self.replicas[i].served.take().unwrap();
        served.terminate().await;
        assert!(served.exited().await.success());
        self.routes.0.lock().unwrap()[i] = (None, false);
    }

    fn relays(&self) -> impl Iterator<Item = &Forwarder> {
        self.replicas.iter().map(|r| &r.smtp)
    }

    fn databases(&self) -> impl Iterator<Item = &Forwarder> {
        self.replicas.iter().map(|r| &r.db)
    }

    /// Starts the login driver; `tag` names its addresses.
    fn drive(&self, tag: &str) -> Driver {
        let stop = CancellationToken::new();
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let client = Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            key: self.key.clone(),
            routes: self.routes.clone(),
            statuses: statuses.clone(),
        };
        let sink = self.sink.clone();
        let tag = tag.to_owned();
        let every = Duration::from_secs_f64(1.0 / rate());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut logins = JoinSet::new();
                let mut tick = tokio::time::interval(every);
                for n in 0.. {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let email = format!("{tag}-{n}@example.com");
                    logins.spawn(login(client.clone(), sink.clone(), email, n));
                }
                logins.join_all().await
            }
        });
        Driver {
            stop,
            task,
            statuses,
        }
    }
}

/// Polls each running replica's readiness every 100 ms, as a Kubernetes
/// Service (with a short probe period) would.
async fn balance(routes: Routes) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    loop {
        let addrs: Vec<Option<String>> = routes
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect();
        for (i, addr) in addrs.into_iter().enumerate() {
            let Some(addr) = addr else { continue };
            let ready = http
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let mut routes = routes.0.lock().unwrap();
            if routes[i].0.as_deref() == Some(addr.as_str()) {
                routes[i].1 = ready;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The driver's HTTP client behind the load balancer.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    key: String,
    routes: Routes,
    /// Every status any call got.
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl Client {
    /// POSTs `body` to `path` on a ready replica; a refused or broken
    /// connection is tried on the next (the load balancer's retry), as is
    /// having no ready replica for a moment. None: nothing answered.
    async fn post(
        &self,
        turn: usize,
        path: &str,
        body: &Value,
        idempotency: Option<&str>,
    ) -> Option<(u16, Value)> {
        self.send(turn, path, body, idempotency).await.0
    }

    /// [`Client::post`], saying whether a connection broke on the way.
    async fn post_noting_breaks(
        &self,
        turn: usize,
        path: &str,
        body: &Value,
    ) -> (Option<(u16, Value)>, bool) {
        self.send(turn, path, body, None).await
    }

    async fn send(
        &self,
        turn: usize,
        path: &str,
        body: &Value,
        idempotency: Option<&str>,
    ) -> (Option<(u16, Value)>, bool) {
        let mut broke = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        while Instant::now() < deadline {
            let Some(addr) = self.routes.pick(turn + attempt).into_iter().next() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            attempt += 1;
            let mut request = self
                .http
                .post(format!("http://{addr}{path}"))
                .bearer_auth(&self.key)
                .json(body);
            if let Some(key) = idempotency {
                request = request.header("idempotency-key", key);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    self.statuses.lock().unwrap().push(status);
                    let body = response.json().await.unwrap_or(Value::Null);
                    return (Some((status, body)), broke);
                }
                Err(e) => {
                    // Refused: nothing was sent. Otherwise it may have been.
                    broke |= !e.is_connect();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        (None, broke)
    }
}

/// What happened to one login.
#[derive(Clone, Debug)]
struct Login {
    email: String,
    /// When StartAuth was sent, and how long it took to answer.
    at: Instant,
    latency: Duration,
    /// StartAuth's status (0: nothing answered).
    started: u16,
    /// When the email arrived.
    emailed: Option<Instant>,
    /// Verify's last status (after retrying 503s).
    verified: Option<u16>,
    /// A Verify's connection broke (its replica was killed) and it was
    /// sent again: the first may have used the code.
    verify_broke: bool,
}

/// A full login: StartAuth (with an idempotency key, so the load balancer's
/// retry on another replica cannot start a second login), the email, then
/// Verify on the next replica, retrying 503 as a client would.
async fn login(client: Client, sink: SmtpSink, email: String, n: usize) -> Login {
    let at = Instant::now();
    let started = client
        .post(
            n,
            "/auth/start",
            &json!({ "email": email }),
            Some(&format!("login-{email}")),
        )
        .await;
    let latency = at.elapsed();
    let mut login = Login {
        email: email.clone(),
        at,
        latency,
        started: started.as_ref().map_or(0, |s| s.0),
        emailed: None,
        verified: None,
        verify_broke: false,
    };
    let Some((200, body)) = started else {
        return login;
    };
    let session_id = body["sessionId"].as_str().unwrap().to_owned();
    let Some(mail) = sink.first_to(&email, Duration::from_secs(120)).await else {
        return login;
    };
    login.emailed = Some(Instant::now());
    let verify = json!({ "sessionId": session_id, "code": mail.code() });
    let wait = Instant::now() + Duration::from_secs(60);
    loop {
        let (answer, broke) = client
            .post_noting_breaks(n + 1, "/auth/verify", &verify)
            .await;
        login.verify_broke |= broke;
        let status = answer.map_or(0, |v| v.0);
        login.verified = Some(status);
        if status != 503 || Instant::now() > wait {
            return login;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Driver {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<Login>>,
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl Driver {
    /// Stops starting logins and waits for the started ones to finish.
    async fn finish(self) -> (Vec<Login>, Vec<u16>) {
        self.stop.cancel();
        let logins = self.task.await.unwrap();
        let statuses = self.statuses.lock().unwrap().clone();
        (logins, statuses)
    }
}

/// A fault's start and end.
#[derive(Clone, Copy, Debug)]
struct Window {
    name: &'static str,
    from: Instant,
    to: Instant,
}

/// Runs `fault` for `lasting` (`undo` ends it), then lets the service
/// recover for `recovering`.
async fn fault(
    name: &'static str,
    lasting: Duration,
    recovering: Duration,
    fault: impl FnOnce(),
    undo: impl FnOnce(),
) -> Window {
    let from = Instant::now();
    fault();
    tokio::time::sleep(lasting).await;
    undo();
    let to = Instant::now();
    tokio::time::sleep(recovering).await;
    Window { name, from, to }
}

/// The properties every scenario keeps, whatever the faults: no 5xx but
/// 503; every accepted StartAuth got exactly one email and its code worked;
/// no other address got more than one.
fn assert_kept(logins: &[Login], statuses: &[u16], sink: &SmtpSink) {
    let other_5xx: Vec<_> = statuses
        .iter()
        .filter(|s| **s >= 500 && **s != 503)
        .collect();
    assert!(other_5xx.is_empty(), "5xx other than 503: {other_5xx:?}");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for mail in sink.mails() {
        for to in mail.to {
            *copies.entry(to).or_default() += 1;
        }
    }
    let accepted = logins.iter().filter(|l| l.started == 200).count();
    assert!(accepted > 0, "no login was accepted");
    for l in logins {
        let n = copies.get(&l.email).copied().unwrap_or(0);
        if l.started == 200 {
            assert_eq!(n, 1, "{} (accepted) got {n} emails: {l:?}", l.email);
            // (A Verify sent again after its replica died mid-call may find
            // its code used by the first.)
            if !l.verify_broke {
                assert_eq!(l.verified, Some(200), "{l:?}");
            }
        } else {
            assert!(
                n <= 1,
                "{} (refused: {}) got {n} emails",
                l.email,
                l.started
            );
        }
    }
}

/// Percentile `p` (0-100) of `values`, in milliseconds.
fn pct(values: &mut [Duration], p: usize) -> u128 {
    if values.is_empty() {
        return 0;
    }
    values.sort();
    values[(values.len() - 1) * p / 100].as_millis()
}

/// How one fault went, measured from its end: the first accepted StartAuth
/// started after it, and the last email of a login started before it.
struct Recovery {
    service_back: Duration,
    email_back: Duration,
}

/// Prints the figures of one fault (its aftermath: until `until`, the next
/// fault or the end) and returns its recovery.
fn report(window: &Window, until: Instant, logins: &[Login]) -> Recovery {
    let during: Vec<&Login> = logins
        .iter()
        .filter(|l| l.at >= window.from && l.at < window.to)
        .collect();
    let refused = during.iter().filter(|l| l.started != 200).count();
    let service_back = logins
        .iter()
        .filter(|l| l.at >= window.to && l.started == 200)
        .map(|l| l.at - window.to)
        .min()
        .unwrap_or(Duration::MAX);
    let email_back = logins
        .iter()
        .filter(|l| l.at < window.to && l.started == 200)
        .filter_map(|l| l.emailed)
        .map(|e| e.saturating_duration_since(window.to))
        .max()
        .unwrap_or_default();
    // After the fault, in 5-second steps: StartAuth latency and email delay.
    let mut steps = String::new();
    for step in 0..6u32 {
        let from = window.to + Duration::from_secs(5) * step;
        let to = (from + Duration::from_secs(5)).min(until);
        let slice: Vec<&Login> = logins
            .iter()
            .filter(|l| l.at >= from && l.at < to)
            .collect();
        if slice.is_empty() || from >= until {
            break;
        }
        let mut latency: Vec<Duration> = slice.iter().map(|l| l.latency).collect();
        let mut delay: Vec<Duration> = slice
            .iter()
            .filter_map(|l| l.emailed.map(|e| e - l.at - l.latency))
            .collect();
        steps += &format!(
            " +{}s: start p50 {} ms, email p50 {} ms;",
            step * 5,
            pct(&mut latency, 50),
            pct(&mut delay, 50)
        );
    }
    eprintln!(
        "fault {name}: {secs:.0} s, {n} logins during it ({refused} refused), service back {service:?} after it, \
         its emails all out {email:?} after it;{steps}",
        name = window.name,
        secs = (window.to - window.from).as_secs_f64(),
        n = during.len(),
        service = service_back,
        email = email_back,
    );
    Recovery {
        service_back,
        email_back,
    }
}

/// Reports each fault (its aftermath lasting until the next) and asserts
/// that service and email came back within [`RECOVERY`].
fn assert_recovered(windows: &[Window], logins: &[Login]) {
    for (i, window) in windows.iter().enumerate() {
        let until = windows.get(i + 1).map_or(Instant::now(), |w| w.from);
        let recovery = report(window, until, logins);
        assert!(recovery.service_back < RECOVERY, "{}", window.name);
        assert!(recovery.email_back < RECOVERY, "{}", window.name);
    }
}

/// Overall figures of a run.
fn summary(name: &str, logins: &[Login], statuses: &[u16]) {
    let accepted: Vec<&Login> = logins.iter().filter(|l| l.started == 200).collect();
    let mut latency: Vec<Duration> = accepted.iter().map(|l| l.latency).collect();
    let mut delay: Vec<Duration> = accepted
        .iter()
        .filter_map(|l| l.emailed.map(|e| e - l.at - l.latency))
        .collect();
    let unavailable = statuses.iter().filter(|s| **s == 503).count();
    eprintln!(
        "{name}: {} logins, {} accepted, {} answers 503; StartAuth p50 {} ms p95 {} ms; \
         email delay p50 {} ms p95 {} ms max {} ms",
        logins.len(),
        accepted.len(),
        unavailable,
        pct(&mut latency, 50),
        pct(&mut latency, 95),
        pct(&mut delay, 50),
        pct(&mut delay, 95),
        pct(&mut delay, 100),
    );
}

/// The relay answers 421 to everything, then refuses connections, then is
/// slow; between faults it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_faults() {
    let cluster = Cluster::start().await;
    let driver = cluster.drive("relay");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (lasting, recovering) = (secs(3, 60), secs(4, 30));
    let mut windows = vec![
        fault(
            "relay 421",
            lasting,
            recovering,
            || cluster.sink.set_unavailable(true),
            || cluster.sink.set_unavailable(false),
        )
        .await,
        fault(
            "relay refused",
            lasting,
            recovering,
            || cluster.relays().for_each(Forwarder::cut),
            || cluster.relays().for_each(Forwarder::restore),
        )
        .await,
    ];
    let slow: &[f64] = if long() { &[1.5, 5.0, 10.0] } else { &[1.5] };
    for delay in slow {
        let name: &'static str = match *delay {
            d if d < 2.0 => "relay slow 1.5 s",
            d if d < 6.0 => "relay slow 5 s",
            _ => "relay slow 10 s",
        };
        windows.push(
            fault(
                name,
                lasting,
                recovering,
                || cluster.sink.set_delay(Duration::from_secs_f64(*delay)),
                || cluster.sink.set_delay(Duration::ZERO),
            )
            .await,
        );
    }
    let (logins, statuses) = driver.finish().await;
    summary("relay faults", &logins, &statuses);
    // An outage costs the queued emails few attempts (probes, not retries
    // of each).
    let pool = sqlx::PgPool::connect(&cluster.db.url).await.unwrap();
    let most: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(attempts), 0) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    eprintln!("relay faults: at most {most} attempts for one email");
    assert!(most <= 5, "an email took {most} attempts");
    assert_recovered(&windows, &logins);
    assert_kept(&logins, &statuses, &cluster.sink);
}

/// The database's connections are reset (and refused), then blackholed
/// (open, silent), then one freezes in the middle of an outbox claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_faults() {
    let cluster = Cluster::start().await;
    let driver = cluster.drive("db");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (lasting, recovering) = (secs(3, 20), secs(5, 30));
    let mut windows = vec![
        fault(
            "database reset",
            lasting,
            recovering,
            || cluster.databases().for_each(Forwarder::cut),
            || cluster.databases().for_each(Forwarder::restore),
        )
        .await,
        fault(
            "database blackhole",
            lasting,
            recovering,
            || cluster.databases().for_each(Forwarder::freeze),
            || cluster.databases().for_each(Forwarder::restore),
        )
        .await,
    ];

    // The next claim of this login's email freezes the connection it came
    // on (whichever replica claims it); the rest of the load carries on.
    let from = Instant::now();
    let email = "frozen@example.com";
    let mut claim = Vec::new();
    for column in ["sign_in", email] {
        claim.extend(u32::try_from(column.len()).unwrap().to_be_bytes());
        claim.extend(column.as_bytes());
    }
    cluster
        .databases()
        .for_each(|f| f.freeze_when_server_sends(&claim));
    let client = Client {
        http: reqwest::Client::new(),
        key: cluster.key.clone(),
        routes: cluster.routes.clone(),
        statuses: Arc::new(Mutex::new(Vec::new())),
    };
    let frozen = tokio::spawn(login(client, cluster.sink.clone(), email.to_owned(), 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.databases().any(Forwarder::has_frozen) {
        assert!(Instant::now() < deadline, "no claim froze");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.databases().for_each(Forwarder::disarm);
    let to = Instant::now();
    let frozen = frozen.await.unwrap();
    let late = frozen.emailed.map(|e| e - to);
    eprintln!(
        "fault database connection frozen mid-claim: its email out {late:?} after the freeze"
    );
    assert!(late.is_some_and(|l| l < RECOVERY), "{frozen:?}");
    assert_eq!(frozen.verified, Some(200));
    tokio::time::sleep(recovering).await;
    windows.push(Window {
        name: "database connection frozen",
        from,
        to,
    });

    let (logins, statuses) = driver.finish().await;
    summary("database faults", &logins, &statuses);
    assert_recovered(&windows, &logins);
    assert_kept(&logins, &statuses, &cluster.sink);
    assert_eq!(cluster.sink.mails_to(email).len(), 1);
}

/// A refresh races across the replicas; a replica is killed with SIGKILL
/// while sending; then both are restarted one after the other (SIGTERM)
/// without a failed login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_faults() {
    let mut cluster = Cluster::start().await;

    // The same refresh token on both replicas at once: both get the same
    // successor (one rotates it, the other is inside the reuse grace).
    let logged_in = {
        let client = Client {
            http: reqwest::Client::new(),
            key: cluster.key.clone(),
            routes: cluster.routes.clone(),
            statuses: Arc::new(Mutex::new(Vec::new())),
        };
        let email = "refresh@example.com";
        let (_, started) = client
            .post(0, "/auth/start", &json!({ "email": email }), None)
            .await
            .unwrap();
        let code = cluster.sink.wait_for(email).await.code();
        client
            .post(
                0,
                "/auth/verify",
                &json!({ "sessionId": started["sessionId"], "code": code }),
                None,
            )
            .await
            .unwrap()
            .1
    };
    let token = logged_in["refreshToken"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let refreshes = cluster.replicas.iter().map(|r| {
        let request = http
            .post(format!(
                "http://{}/auth/refresh",
                r.served.as_ref().unwrap().http
            ))
            .bearer_auth(&cluster.key)
            .json(&json!({ "refreshToken": token }));
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    let answers = futures_util::future::join_all(refreshes).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(answers[0].1["refreshToken"], answers[1].1["refreshToken"]);
    assert_ne!(answers[0].1["refreshToken"].as_str(), Some(token.as_str()));

    let driver = cluster.drive("process");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Replica 0 is killed in the middle of sending: its relay connection
    // goes silent first, so what it claimed was never accepted there.
    let from = Instant::now();
    cluster.replicas[0].smtp.freeze();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.kill(0).await;
    let to = Instant::now();
    cluster.replicas[0].smtp.restore();
    tokio::time::sleep(secs(4, 20)).await;
    let killed = Window {
        name: "replica killed",
        from,
        to,
    };
    cluster.run(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A rolling restart: each replica in turn, SIGTERM, exit, start.
    let restart_from = Instant::now();
    for i in 0..2 {
        cluster.terminate(i).await;
        cluster.run(i).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let restart_to = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (logins, statuses) = driver.finish().await;
    summary("process faults", &logins, &statuses);
    let recovery = report(&killed, restart_from, &logins);
    assert!(recovery.email_back < RECOVERY);
    let restarting: Vec<&Login> = logins
        .iter()
        .filter(|l| l.at >= restart_from && l.at < restart_to)
        .collect();
    let failed: Vec<_> = restarting
        .iter()
        .filter(|l| l.started != 200 || l.verified != Some(200))
        .collect();
    eprintln!(
        "fault rolling restart: {:.1} s, {} logins, {} failed",
        (restart_to - restart_from).as_secs_f64(),
        restarting.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed logins in the rolling restart: {failed:#?}"
    );
    assert_kept(&logins, &statuses, &cluster.sink);
}
