//! Connection limits of the two public listeners, so one client cannot make
//! the process hold unbounded memory or connections:
//!
//! - HTTP/2 (gRPC port and gateway): at most
//!   `LATCHKEY_HTTP2_MAX_CONCURRENT_STREAMS` streams per connection, flow
//!   control windows and a header list cap that bound what a connection can
//!   make the server buffer, keep-alive pings that drop dead peers, and
//!   hyper's limits on reset streams (Rapid Reset, "MadeYouReset") kept on.
//!   Request messages are capped at [`MAX_REQUEST_BYTES`] on every service.
//! - The gRPC port: a cap on open connections, and a connection that sends
//!   nothing for the keep-alive interval plus its timeout is closed.
//! - The gateway (HTTP/1.1 and HTTP/2): a header-read timeout (which also
//!   closes idle kept-alive connections), a first-request deadline for any
//!   protocol, a whole-request timeout (408) and a cap on open connections.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

pub use crate::api::grpc::MAX_REQUEST_BYTES;
use crate::config::Settings;

/// Flow-control window per HTTP/2 stream: what one stream can send before
/// the server reads it.
pub const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window per HTTP/2 connection: what all its streams together
/// can have unread in the server.
pub const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Largest header block (decoded) of one HTTP/2 request.
pub const HTTP2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams a client may reset before they are accepted (h2's default;
/// CVE-2023-44487, "Rapid Reset").
pub const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because of the client's errors before it
/// sends GOAWAY (hyper's default; tonic turns it off unless set;
/// "MadeYouReset", CVE-2025-8671).
pub const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The limits of both listeners, from the settings.
#[derive(Clone, Debug)]
pub struct Limits {
    pub http2_max_concurrent_streams: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub http_header_read_timeout: Duration,
    pub http_request_timeout: Duration,
    pub http_max_connections: usize,
    pub grpc_max_connections: usize,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            http2_max_concurrent_streams: s.http2_max_concurrent_streams,
            http2_keepalive_interval: s.http2_keepalive_interval,
            http2_keepalive_timeout: s.http2_keepalive_timeout,
            http_header_read_timeout: s.http_header_read_timeout,
            http_request_timeout: s.http_request_timeout,
            http_max_connections: s.http_max_connections as usize,
            grpc_max_connections: s.grpc_max_connections as usize,
        }
    }

    /// The HTTP/2 limits on tonic's server (the gRPC port).
    pub fn grpc_server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .http2_adaptive_window(Some(false))
            .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST)
            .http2_max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS))
            .http2_max_local_error_reset_streams(Some(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS))
            .http2_keepalive_interval(Some(self.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(self.http2_keepalive_timeout))
    }

    /// The gRPC port's connections, for tonic: at most
    /// `LATCHKEY_GRPC_MAX_CONNECTIONS` open (more wait in the listen
    /// backlog), and each closed when its peer sends nothing (not even the
    /// answer to a keep-alive ping) or takes nothing of a pending write for
    /// the keep-alive interval plus its timeout. That ends connections that
    /// never finish the HTTP/2 preface or a request's headers, which hyper
    /// leaves open, while a live client always answers the pings.
    pub fn grpc_incoming(
        &self,
        listener: TcpListener,
    ) -> impl futures_util::Stream<Item = std::io::Result<GrpcConnection>> + use<> {
        let slots = Arc::new(Semaphore::new(self.grpc_max_connections));
        let idle = self.http2_keepalive_interval + self.http2_keepalive_timeout;
        futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            let connection = match listener.accept().await {
                Ok((tcp, _)) => {
                    // No Nagle: a response's frames must not wait for the peer's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                    let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
                    io.set_read_timeout(Some(idle));
                    io.set_write_timeout(Some(idle));
                    Ok(GrpcConnection {
                        io: Box::pin(io),
                        _slot: slot,
                    })
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause, then go on.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(e)
                }
            };
            Some((connection, (listener, slots)))
        })
    }

    /// The connection builder of the gateway: HTTP/1.1 and HTTP/2 with the
    /// same HTTP/2 limits as the gRPC port.
    fn http_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.http_header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .adaptive_window(false)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(self.http2_keepalive_interval)
            .keep_alive_timeout(self.http2_keepalive_timeout);
        builder
    }

    /// Serves `router` on `listener` within these limits until `shutdown`
    /// resolves, then stops accepting and waits for open connections to
    /// finish their requests (the caller bounds that wait).
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        router: axum::Router,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let builder = self.http_builder();
        let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            self.http_request_timeout,
        ));
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(self.http_max_connections));
        let first_request_deadline = self.http_header_read_timeout;
        tokio::pin!(shutdown);
        loop {
            // Over the cap, connections wait in the listen backlog.
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                () = &mut shutdown => break,
            };
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, then go on.
                        tracing::warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // No Nagle: a response's frames must not wait for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let first_request = Arc::new(tokio::sync::Notify::new());
            let service = {
                let first_request = first_request.clone();
                router
                    .clone()
                    .map_request(move |request: http::Request<Incoming>| {
                        first_request.notify_one();
                        request.map(axum::body::Body::new)
                    })
            };
            let connection = builder
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // Whatever the protocol (an unfinished HTTP/2 preface, a
                // silent TLS-less client), a connection that brings no
                // request in time is closed.
                let no_request = async {
                    if tokio::time::timeout(first_request_deadline, first_request.notified())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    served = connection => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "HTTP connection ended with an error");
                        }
                    }
                    () = no_request => {
                        tracing::debug!("closed an HTTP connection that sent no request in time");
                    }
                }
                drop(permit);
            });
        }
        // Stop listening at once; open connections finish their requests.
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// A connection of the gRPC port (see [`Limits::grpc_incoming`]): its socket
/// with read and write deadlines, and its slot under the connection cap.
pub struct GrpcConnection {
    io: Pin<Box<tokio_io_timeout::TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
}

impl Connected for GrpcConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.get_ref().connect_info()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}
