//! The latchkey binary in a process of its own, and a TCP forwarder a test controls.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tonic::transport::Channel;

use super::*;

/// A TCP forwarder (to PostgreSQL or an SMTP server) that a test controls:
/// cut (connections dropped, new ones refused), frozen (connections kept
/// open but nothing forwarded: a blackhole), or one connection frozen once
/// the server sends given bytes; and restored.
#[derive(Clone)]
pub struct Forwarder {
    pub addr: SocketAddr,
    ctl: Arc<ForwarderCtl>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Default)]
struct ForwarderCtl {
    up: std::sync::atomic::AtomicBool,
    /// Every connection forwards nothing (until restored).
    frozen: std::sync::atomic::AtomicBool,
    /// Freeze the first connection on which the server sends these bytes.
    freeze_on: Mutex<Option<Vec<u8>>>,
    /// Connections frozen that way so far.
    frozen_connections: std::sync::atomic::AtomicUsize,
    froze: Notify,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(ForwarderCtl::default());
        ctl.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (ctl2, gen2) = (ctl.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !ctl2.up.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // refused while cut
                    continue;
                }
                let mut cut = gen2.subscribe();
                let ctl = ctl2.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let this = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let (client_read, client_write) = inbound.into_split();
                    let (server_read, server_write) = outbound.into_split();
                    let up = pump(client_read, server_write, false, &ctl, &this);
                    let down = pump(server_read, client_write, true, &ctl, &this);
                    tokio::select! {
                        _ = futures_util::future::join(up, down) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            ctl,
            generation,
        }
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.ctl
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// A blackhole: every connection, open or new, stays open but nothing
    /// goes through (a dropped route or conntrack entry).
    pub fn freeze(&self) {
        self.ctl
            .frozen
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first connection on which the server sends `bytes` forwards
    /// nothing more, that reply included, either way; the others carry on.
    pub fn freeze_when_server_sends(&self, bytes: &[u8]) {
        *self.ctl.freeze_on.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Freezes no connection by [`Forwarder::freeze_when_server_sends`]
    /// after all.
    pub fn disarm(&self) {
        *self.ctl.freeze_on.lock().unwrap() = None;
    }

    /// Whether a connection was frozen by
    /// [`Forwarder::freeze_when_server_sends`].
    pub fn has_frozen(&self) -> bool {
        self.ctl
            .frozen_connections
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// Waits (up to `within`) until a connection was frozen by
    /// [`Forwarder::freeze_when_server_sends`].
    pub async fn wait_frozen(&self, within: Duration) {
        tokio::time::timeout(within, async {
            loop {
                let froze = self.ctl.froze.notified();
                if self
                    .ctl
                    .frozen_connections
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
                {
                    return;
                }
                froze.await;
            }
        })
        .await
        .expect("a connection froze in time");
    }

    /// Works again: frozen connections are dropped (as a reset would),
    /// new ones go through.
    pub fn restore(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.ctl.frozen.swap(false, SeqCst) || self.ctl.frozen_connections.load(SeqCst) > 0 {
            self.generation.send_modify(|g| *g += 1);
        }
        self.ctl.up.store(true, SeqCst);
    }
}

/// Copies one direction of a forwarded connection until either side closes,
/// or stops forwarding for good once the connection is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    from_server: bool,
    ctl: &ForwarderCtl,
    this_frozen: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if from_server && n > 0 {
            let mut freeze_on = ctl.freeze_on.lock().unwrap();
            let hit = freeze_on
                .as_deref()
                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p));
            if hit {
                *freeze_on = None;
                this_frozen.store(true, SeqCst);
                ctl.frozen_connections.fetch_add(1, SeqCst);
                ctl.froze.notify_waiters();
            }
        }
        if this_frozen.load(SeqCst) || ctl.frozen.load(SeqCst) {
            // Nothing more either way, not even a close: both ends keep
            // waiting (until the test cuts or restores).
            this_frozen.store(true, SeqCst);
            let _keep = (from, to);
            return std::future::pending().await;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Runs the `latchkey` binary against the app's database and data dir.
/// (Async: a blocking wait would stall the in-process server mid-transaction.)
pub async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    cli_with_env(app, &[], args).await
}

/// [`cli`] with more `LATCHKEY_*` settings in the command's environment.
pub async fn cli_with_env(
    app: &TestApp,
    envs: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .envs(envs.iter().copied())
        .env("LATCHKEY_DATA_DIR", &app.data_dir.path)
        .env("LATCHKEY_DATABASE_URL", &app.db.url)
        .env("LATCHKEY_LOG", "error")
        .output()
        .await
        .unwrap()
}

/// The `latchkey` binary serving on port 0 in a process of its own, with
/// JSON logs (for what only a whole process shows: metrics, exported
/// traces, signals, exit codes).
pub struct Served {
    pub child: tokio::process::Child,
    pub grpc: String,
    pub http: String,
    pub metrics: String,
    /// The log lines before "latchkey is serving".
    pub early_log: Vec<String>,
    /// The log lines after it, as they come (read by a task, so the process
    /// never blocks on a full pipe).
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Served {
    /// Starts `latchkey serve` with `dir` as its data directory and `envs`.
    pub async fn start(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["serve"])
            .env("LATCHKEY_GRPC_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_HTTP_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
            .env("LATCHKEY_DATA_DIR", dir)
            .env("LATCHKEY_LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut early_log = Vec::new();
        let serving = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().unwrap_or_else(|| {
                    panic!("the log ended before serving:\n{}", early_log.join("\n"))
                });
                if line.contains("latchkey is serving") {
                    break serde_json::from_str::<serde_json::Value>(&line).unwrap();
                }
                early_log.push(line);
            }
        })
        .await
        .expect("serving within 30 s");
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let addr = |name: &str| serving["fields"][name].as_str().unwrap().to_owned();
        Self {
            child,
            grpc: addr("grpc"),
            http: addr("http"),
            metrics: addr("metrics"),
            early_log,
            log,
        }
    }

    /// The next JSON log line for which `wanted` holds (waits up to 10 s).
    pub async fn log_line(
        &mut self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.log.recv().await.expect("the log ended");
                let value: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if wanted(&value) {
                    return value;
                }
            }
        })
        .await
        .expect("the log line within 10 s")
    }

    /// The rest of the log, once the process has exited.
    pub async fn rest_of_log(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(10), self.log.recv()).await
        {
            lines.push(line);
        }
        lines
    }

    /// Sends SIGTERM.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process and waits for it.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits (up to 30 s) for the process to exit.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exit within 30 s")
            .unwrap()
    }

    pub async fn grpc_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// Creates an app key of the default tenant with the CLI, on the SQLite
/// database in `dir`.
pub async fn create_key(dir: &std::path::Path) -> String {
    create_key_with(dir, &[]).await
}

/// [`create_key`] with more `LATCHKEY_*` settings (another database, say).
pub async fn create_key_with(dir: &std::path::Path, envs: &[(&str, &str)]) -> String {
    create_scoped_key(dir, "app", envs).await
}

/// A key of the default tenant with `scope` (`app` or `admin`), made with the
/// CLI on the database `envs` and the data directory `dir` name.
pub async fn create_scoped_key(
    dir: &std::path::Path,
    scope: &str,
    envs: &[(&str, &str)],
) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["apikey", "create", "--name", "tests", "--scope", scope])
        .envs(envs.iter().copied())
        .env("LATCHKEY_DATA_DIR", dir)
        .env("LATCHKEY_LOG", "error")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("lk_"))
        .expect("a key in the output")
        .to_owned()
}
