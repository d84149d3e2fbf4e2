//! Connection limits: one HTTP/2 connection cannot make the gRPC port hold
//! unbounded streams and memory, and slow clients (Slowloris) cannot hold
//! the gateway's connections, while normal calls keep working.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Backend, Served, TempDir, spawn_app_with};

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// How a stream of the flood ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// The server answered with this `grpc-status`.
    Status(String),
    /// The server reset the stream.
    Reset(String),
    Error(String),
}

async fn ending(response: h2::client::ResponseFuture) -> Ending {
    let response = match response.await {
        Ok(response) => response,
        Err(e) => {
            return match e.reason() {
                Some(reason) => Ending::Reset(format!("{reason:?}")),
                None => Ending::Error(e.to_string()),
            };
        }
    };
    if let Some(status) = response.headers().get("grpc-status") {
        return Ending::Status(status.to_str().unwrap().to_owned());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        if chunk.is_err() {
            break;
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => Ending::Status(
            trailers
                .get("grpc-status")
                .map(|s| s.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        ),
        Ok(None) => Ending::Error("no trailers".into()),
        Err(e) => Ending::Error(e.to_string()),
    }
}

/// Issue 10, item 2: one connection, no API key, 400 streams to the public
/// health `Check`, each with the first half of a 1 MiB message. The server
/// advertises a stream limit, refuses the oversized messages at their
/// length prefix, and its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_flood_the_grpc_port_with_streams() {
    const STREAMS: usize = 400;
    let dir = TempDir::new();
    let served = Served::start(&dir.path, &[]).await;
    let pid = served.child.id().unwrap();
    let before = proc_status_kib(pid, "VmRSS:");

    let tcp = TcpStream::connect(&served.grpc).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut connection = Box::pin(connection);
    // The server's SETTINGS come before its answer to a PING.
    let mut ping = connection.ping_pong().unwrap();
    tokio::select! {
        ended = &mut connection => panic!("the connection ended: {ended:?}"),
        pong = ping.ping(h2::Ping::opaque()) => {
            pong.unwrap();
        }
    }
    let advertised = connection.max_concurrent_send_streams();
    tokio::spawn(async move {
        let _ = connection.await;
    });

    // A gRPC frame announcing 1 MiB, and half of it.
    let half_message = {
        let mut b = BytesMut::with_capacity(5 + 512 * 1024);
        b.put_u8(0);
        b.put_u32(1024 * 1024);
        b.put_bytes(b'x', 512 * 1024);
        b.freeze()
    };
    let uri = format!("http://{}/grpc.health.v1.Health/Check", served.grpc);
    let mut streams = tokio::task::JoinSet::new();
    let opened = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..STREAMS {
            // Waits while the server's stream limit is reached.
            let mut send = send.clone().ready().await.unwrap();
            let request = http::Request::post(uri.as_str())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, mut stream) = send.send_request(request, false).unwrap();
            // The rest of the message never comes; the stream stays open.
            let _ = stream.send_data(half_message.clone(), false);
            streams.spawn(async move {
                let ending = ending(response).await;
                drop(stream);
                ending
            });
        }
    })
    .await;
    let endings = tokio::time::timeout(Duration::from_secs(60), async {
        let mut endings = Vec::new();
        while let Some(ending) = streams.join_next().await {
            endings.push(ending.unwrap());
        }
        endings
    })
    .await;

    // The peak, whenever it was.
    let peak = proc_status_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB ({before} KiB before, {peak} KiB peak)"
    );
    assert!(
        opened.is_ok(),
        "the streams could not all be opened in 60 s"
    );
    let mut endings = endings.expect("every stream answered within 60 s");
    endings.sort();
    endings.dedup();
    // Refused at the length prefix, as INVALID_ARGUMENT like any oversized
    // request; a stream the client opened before it saw a slot free up on
    // the server's side is refused outright.
    let refused = Ending::Reset("REFUSED_STREAM".into());
    assert!(endings.contains(&Ending::Status("3".into())), "{endings:?}");
    assert!(
        endings
            .iter()
            .all(|e| *e == Ending::Status("3".into()) || *e == refused),
        "{endings:?}"
    );
    assert_eq!(advertised, 100, "SETTINGS_MAX_CONCURRENT_STREAMS");

    // The server still answers a normal health check.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(served.grpc_channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");
    served.kill().await;
}

/// A raw HTTP/2 connection to `addr` (its driver runs in a task).
async fn h2_connection(
    addr: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, driver)
}

/// A health `Check` on a raw HTTP/2 connection.
async fn h2_health_check(send: &h2::client::SendRequest<bytes::Bytes>, addr: &str) -> Ending {
    let mut send = send.clone().ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    // An empty HealthCheckRequest: uncompressed, length 0.
    stream
        .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    ending(response).await
}

/// The gRPC port closes connections that send nothing (no preface, half a
/// preface, half of a grpc-web request's headers) once the keep-alive
/// interval and its timeout have passed, while a live HTTP/2 connection,
/// which answers the pings, stays open and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_closes_connections_that_send_nothing() {
    let dir = TempDir::new();
    let served = Served::start(
        &dir.path,
        &[
            ("LATCHKEY_HTTP2_KEEPALIVE_INTERVAL", "1s"),
            ("LATCHKEY_HTTP2_KEEPALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let (live, _driver) = h2_connection(&served.grpc).await;
    assert_eq!(
        h2_health_check(&live, &served.grpc).await,
        Ending::Status("0".into())
    );

    let mut slow = Vec::new();
    for i in 0..30 {
        let mut tcp = TcpStream::connect(&served.grpc).await.unwrap();
        let kind = match i % 3 {
            0 => "silent",
            1 => {
                tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
                "half a preface"
            }
            _ => {
                tcp.write_all(b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\n")
                    .await
                    .unwrap();
                "unfinished grpc-web headers"
            }
        };
        slow.push((kind, tcp));
    }
    let closes = slow.into_iter().map(|(kind, tcp)| async move {
        // Generous against the 2 s; without the deadline: never.
        (kind, closed_by_server(tcp, Duration::from_secs(20)).await)
    });
    for (kind, closed) in futures_util::future::join_all(closes).await {
        assert!(closed.is_some(), "a connection ({kind}) is still open");
    }
    // The live connection answered the pings all along and still works.
    assert_eq!(
        h2_health_check(&live, &served.grpc).await,
        Ending::Status("0".into())
    );
    served.kill().await;
}

/// The gRPC port holds at most `LATCHKEY_GRPC_MAX_CONNECTIONS` connections;
/// the next one is served once one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_caps_open_connections() {
    let dir = TempDir::new();
    let served = Served::start(&dir.path, &[("LATCHKEY_GRPC_MAX_CONNECTIONS", "2")]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (send, driver) = h2_connection(&served.grpc).await;
        assert_eq!(
            h2_health_check(&send, &served.grpc).await,
            Ending::Status("0".into())
        );
        held.push((send, driver));
    }
    // The third connection is not accepted: its call waits...
    let addr = served.grpc.clone();
    let mut third = tokio::spawn(async move {
        let (send, _driver) = h2_connection(&addr).await;
        h2_health_check(&send, &addr).await
    });
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(waited.is_err(), "answered over the cap: {waited:?}");
    // ...until one of the two goes away.
    let (send, driver) = held.pop().unwrap();
    drop(send);
    driver.abort();
    let answered = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(answered, Ending::Status("0".into()));
    served.kill().await;
}

/// What a slow client saw when the server closed its connection.
struct Closed {
    /// Everything the server sent before closing.
    received: String,
}

/// Reads until the server closes the connection; `None` if it stays open
/// for `within`.
async fn closed_by_server(mut tcp: TcpStream, within: Duration) -> Option<Closed> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| Closed {
        received: String::from_utf8_lossy(&received).into_owned(),
    })
}

/// Issue 10, item 3: 100 half-sent requests on the gateway (nothing at all,
/// unfinished headers, unfinished bodies, an idle kept-alive connection)
/// are all closed by the server within its timeouts, while normal calls
/// keep succeeding meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_normal_calls_keep_working() {
    // Storage plays no part: one backend, the gateway's own listener.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.http_header_read_timeout = Duration::from_secs(2);
        s.http_request_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = app.http_base.trim_start_matches("http://").to_owned();
    let body = serde_json::json!({ "email": "slow@example.com" }).to_string();

    let mut slow = Vec::new();
    for i in 0..100 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let kind = match i % 4 {
            // Connects and says nothing.
            0 => "silent",
            // Headers that never end.
            1 => {
                tcp.write_all(b"POST /auth/start HTTP/1.1\r\nhost: x\r\nx-slow: a")
                    .await
                    .unwrap();
                "unfinished headers"
            }
            // A body that never ends (after the API key was accepted).
            2 => {
                let head = format!(
                    "POST /auth/start HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    app.key,
                    body.len()
                );
                tcp.write_all(head.as_bytes()).await.unwrap();
                tcp.write_all(&body.as_bytes()[..5]).await.unwrap();
                "unfinished body"
            }
            // One request answered, then an idle kept-alive connection.
            _ => {
                tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
                "idle keep-alive"
            }
        };
        slow.push((kind, tcp));
    }

    // Normal calls, over fresh connections, while the slow ones are open.
    let open = Arc::new(AtomicUsize::new(slow.len()));
    let normal = tokio::spawn({
        let open = open.clone();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let base = app.http_base.clone();
        let key = app.key.clone();
        async move {
            let mut while_open = 0;
            let mut i = 0;
            loop {
                let still_open = open.load(Ordering::SeqCst);
                if still_open == 0 && while_open > 0 {
                    return while_open;
                }
                let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
                assert_eq!(ready.status(), 200);
                let started = http
                    .post(format!("{base}/auth/start"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({ "email": format!("normal{i}@example.com") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(started.status(), 200, "{:?}", started.text().await);
                if open.load(Ordering::SeqCst) > 0 {
                    while_open += 1;
                }
                i += 1;
            }
        }
    });

    let closes = slow.into_iter().map(|(kind, tcp)| {
        let open = open.clone();
        async move {
            // Generous against the 2 s / 3 s timeouts; without limits: never.
            let closed = closed_by_server(tcp, Duration::from_secs(20)).await;
            open.fetch_sub(1, Ordering::SeqCst);
            (kind, closed)
        }
    });
    for (kind, closed) in futures_util::future::join_all(closes).await {
        let closed = closed.unwrap_or_else(|| panic!("a connection ({kind}) is still open"));
        if kind == "unfinished body" {
            assert!(
                closed.received.starts_with("HTTP/1.1 408"),
                "{kind}: {}",
                closed.received
            );
        }
    }
    let normal_calls = normal.await.unwrap();
    assert!(normal_calls > 0);
}

/// The gateway holds at most `LATCHKEY_HTTP_MAX_CONNECTIONS` connections;
/// the next one is served once one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_caps_open_connections() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.http_max_connections = 3;
    })
    .await;
    let addr = app.http_base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    // The fourth connection is not accepted: its request waits...
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), fourth.read_to_end(&mut answer)).await;
    assert!(waited.is_err(), "answered over the cap: {answer:?}");
    // ...until one of the three goes away.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(10), fourth.read_to_end(&mut answer))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}
