//! The SMTP client: lettre's SMTP connection (protocol, STARTTLS, AUTH) over
//! sockets we open ourselves with `TCP_NODELAY`, in a small pool.
//!
//! Why not lettre's own transport: it opens sockets with Nagle's algorithm on
//! and writes a message's final `\r\n.\r\n` as a separate segment, which then
//! waits for the server's delayed ACK: 40 ms per email, and a pool of 8
//! connections tops out near 180 emails a second. With `TCP_NODELAY` an email
//! takes about a millisecond on a local relay.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lettre::{
    Address,
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};

use super::transport::SendError;

/// How the connection is protected, from the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    /// `smtp://host` (port 25): plain.
    Plain,
    /// `smtp://host?tls=required` (port 587): STARTTLS, or fail.
    StartTlsRequired,
    /// `smtp://host?tls=opportunistic` (port 587): STARTTLS when offered.
    StartTlsOpportunistic,
    /// `smtps://host` (port 465): TLS from the first byte.
    Implicit,
}

/// A pooled SMTP client for one relay.
pub struct SmtpClient {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    /// `auth_without_tls=true` in the URL: the operator accepts sending the
    /// credentials over a connection without TLS (a relay on a trusted
    /// network). Off by default: then AUTH only ever goes over TLS.
    auth_without_tls: bool,
    hello: ClientId,
    /// Connecting, and each command (RFC 5321 §4.5.3.2: a timeout per
    /// command, not one for the whole exchange).
    timeout: Duration,
    /// The wait for the answer to the end of a message, which a relay may
    /// legitimately take long to give (it may be filtering the message).
    data_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// How long the relay took to accept the last message (microseconds):
    /// what a suppressed email waits before it counts as accepted.
    last_accept_us: AtomicU64,
}

/// Reused without a check when idle for less than this; tested with NOOP
/// after, since relays close idle connections.
const FRESH: Duration = Duration::from_secs(5);
/// Closed instead of reused when idle for longer.
const STALE: Duration = Duration::from_secs(60);

impl SmtpClient {
    /// Parses `smtp://[user:pass@]host[:port][?tls=required|opportunistic]`
    /// or `smtps://[user:pass@]host[:port]` (the URLs lettre accepts), plus
    /// `auth_without_tls=true` to allow AUTH over a connection without TLS.
    ///
    /// Credentials on a plain `smtp://` URL are refused unless that flag is
    /// given: they would cross the network in clear.
    pub fn from_url(url: &str, timeout: Duration, max_idle: usize) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None | Some("none")) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTlsRequired, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTlsOpportunistic, 587),
            ("smtps", _) => (Security::Implicit, 465),
            (scheme, tls) => anyhow::bail!("unsupported scheme {scheme} with tls={tls:?}"),
        };
        let auth_without_tls = match parsed
            .query_pairs()
            .find(|(k, _)| k == "auth_without_tls")
            .map(|(_, v)| v.into_owned())
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => anyhow::bail!("auth_without_tls={other:?}: expected true or false"),
        };
        let decode = |s: &str| {
            percent_decode(s).map_err(|_| anyhow::anyhow!("the user info is not valid UTF-8"))
        };
        let credentials = if parsed.username().is_empty() {
            None
        } else {
            Some(Credentials::new(
                decode(parsed.username())?,
                decode(parsed.password().unwrap_or_default())?,
            ))
        };
        if credentials.is_some() && security == Security::Plain && !auth_without_tls {
            anyhow::bail!(
                "a user and password on a plain smtp:// URL would be sent without TLS; \
                 use smtps:// or ?tls=required, or add auth_without_tls=true if the relay \
                 is on a network you trust"
            );
        }
        Ok(Self {
            port: parsed.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            auth_without_tls,
            hello: ClientId::default(),
            timeout,
            data_timeout: timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            last_accept_us: AtomicU64::new(0),
        })
    }

    /// The wait for the answer to the end of a message (default: the
    /// per-command timeout).
    pub fn with_data_timeout(mut self, data_timeout: Duration) -> Self {
        self.data_timeout = data_timeout.max(self.timeout);
        self
    }

    #[tracing::instrument(name = "smtp connect", skip_all)]
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Transient("connecting to the mail server timed out".into()))?
        .map_err(|e| SendError::Transient(format!("connecting to the mail server: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let setup = async {
            let tls = || TlsParameters::new(self.host.clone()).map_err(classify);
            let mut conn = match self.security {
                Security::Implicit => {
                    let tls_stream = implicit_tls(&self.host, tcp).await.map_err(|e| {
                        SendError::Transient(format!("TLS with the mail server: {e:#}"))
                    })?;
                    AsyncSmtpConnection::connect_with_transport(
                        Box::new(ImplicitTls(tls_stream)),
                        &self.hello,
                    )
                    .await
                    .map_err(classify)?
                }
                _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(classify)?,
            };
            match self.security {
                Security::StartTlsRequired => {
                    conn.starttls(tls()?, &self.hello).await.map_err(classify)?;
                }
                Security::StartTlsOpportunistic if conn.can_starttls() => {
                    conn.starttls(tls()?, &self.hello).await.map_err(classify)?;
                }
                _ => {}
            }
            if let Some(credentials) = &self.credentials {
                // Opportunistic STARTTLS the relay did not offer (or an
                // attacker stripped): the credentials are not sent.
                if !conn.is_encrypted() && !self.auth_without_tls {
                    conn.abort().await;
                    return Err(SendError::Transient(
                        "the mail server offered no STARTTLS: not sending the SMTP credentials \
                         without TLS (LATCHKEY_SMTP_URL: use tls=required, or add \
                         auth_without_tls=true to allow it)"
                            .into(),
                    ));
                }
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(classify)?;
            }
            Ok::<_, SendError>(conn)
        };
        match tokio::time::timeout(self.timeout, setup).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(
                "the mail server did not answer in time".into(),
            )),
        }
    }

    /// A connection: an idle one that still works, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let idle = self.idle.lock().expect("smtp pool lock").pop();
            let Some((mut conn, since)) = idle else {
                return self.connect().await;
            };
            let age = since.elapsed();
            if age < FRESH {
                return Ok(conn);
            }
            if age < STALE
                && tokio::time::timeout(self.timeout, conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    /// Stands in for [`Self::send`] of a message that is not sent: a
    /// working connection (so an unreachable relay fails it the same way),
    /// then as long as the relay took to accept its last message.
    pub async fn accept_unsent(&self) -> Result<(), SendError> {
        let conn = self.checkout().await?;
        let took = Duration::from_micros(self.last_accept_us.load(Ordering::Relaxed));
        tokio::time::sleep(took.min(self.timeout)).await;
        let mut idle = self.idle.lock().expect("smtp pool lock");
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
        Ok(())
    }

    /// Sends one message; the connection goes back to the pool if healthy.
    #[tracing::instrument(
        name = "smtp",
        skip_all,
        fields(otel.name = "smtp send", otel.kind = "client", server.address = %self.host, server.port = self.port)
    )]
    pub async fn send(
        &self,
        from: Option<Address>,
        to: Vec<Address>,
        message: &[u8],
    ) -> Result<(), SendError> {
        let envelope = Envelope::new(from, to).map_err(|e| SendError::Permanent(e.to_string()))?;
        let mut conn = self.checkout().await?;
        let began = Instant::now();
        let sent = self.transaction(&mut conn, &envelope, message).await;
        if sent.is_ok() {
            let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.last_accept_us.store(took, Ordering::Relaxed);
        }
        match sent {
            Ok(_) if !conn.has_broken() => {
                let mut idle = self.idle.lock().expect("smtp pool lock");
                if idle.len() < self.max_idle {
                    idle.push((conn, Instant::now()));
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }
}

impl SmtpClient {
    /// One mail transaction: MAIL, RCPT and DATA each within the command
    /// timeout, then the message and the wait for the answer to its end
    /// within the data timeout. Up to DATA's go-ahead nothing was
    /// transmitted, so a failure is plainly temporary (or permanent, on a
    /// 5xx); after it, a missing answer leaves the outcome uncertain.
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), SendError> {
        use lettre::transport::smtp::{
            commands::{Data, Mail, Rcpt},
            extension::{Extension, MailBodyParameter, MailParameter},
        };
        let late = || SendError::Transient("the mail server did not answer in time".into());
        let mut options = Vec::new();
        let non_ascii = |a: &Address| !AsRef::<str>::as_ref(a).is_ascii();
        if envelope.to().iter().any(non_ascii) || envelope.from().is_some_and(non_ascii) {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(SendError::Permanent(
                    "the mail server does not accept internationalised addresses (SMTPUTF8)".into(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(SendError::Permanent(
                    "the mail server does not accept 8-bit messages (8BITMIME)".into(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), options);
        tokio::time::timeout(self.timeout, conn.command(mail))
            .await
            .map_err(|_| late())?
            .map_err(classify)?;
        for to in envelope.to() {
            let rcpt = Rcpt::new(to.clone(), Vec::new());
            tokio::time::timeout(self.timeout, conn.command(rcpt))
                .await
                .map_err(|_| late())?
                .map_err(classify)?;
        }
        tokio::time::timeout(self.timeout, conn.command(Data))
            .await
            .map_err(|_| late())?
            .map_err(classify)?;
        match tokio::time::timeout(self.data_timeout, conn.message(message)).await {
            Ok(Ok(_)) => Ok(()),
            // The server answered the end of the message with a refusal.
            Ok(Err(e)) if e.is_permanent() || e.is_transient() => Err(classify(e)),
            Ok(Err(e)) => Err(SendError::Uncertain(format!(
                "the connection failed after the message was sent, before the mail server \
                 confirmed it: {}",
                crate::auth::email::mask_addresses(&e.to_string())
            ))),
            Err(_) => Err(SendError::Uncertain(format!(
                "the message was sent but the mail server did not confirm it within {:?}",
                self.data_timeout
            ))),
        }
    }
}

/// TLS from the first byte (smtps), with the Mozilla roots lettre also uses.
async fn implicit_tls(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use std::sync::{Arc, OnceLock};
    use tokio_rustls::rustls;
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?)
}

/// A TLS stream lettre can drive (its trait wants the peer address).
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl std::fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A mail server error: a permanent refusal (5xx) stays permanent, everything
/// else may pass. Any address the text quotes is masked (it is logged,
/// traced and kept in the outbox row).
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let text = crate::auth::email::mask_addresses(&e.to_string());
    if e.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_security_port_and_credentials() {
        let t = Duration::from_secs(1);
        let plain = SmtpClient::from_url("smtp://relay.internal", t, 1).unwrap();
        assert_eq!((plain.security, plain.port), (Security::Plain, 25));
        assert!(plain.credentials.is_none());
        let starttls =
            SmtpClient::from_url("smtp://u%40x:p%2Fw@relay:2525?tls=required", t, 1).unwrap();
        assert_eq!(
            (starttls.security, starttls.port),
            (Security::StartTlsRequired, 2525)
        );
        assert!(starttls.credentials.is_some());
        let opportunistic = SmtpClient::from_url("smtp://relay?tls=opportunistic", t, 1).unwrap();
        assert_eq!(opportunistic.port, 587);
        let implicit = SmtpClient::from_url("smtps://relay", t, 1).unwrap();
        assert_eq!(
            (implicit.security, implicit.port),
            (Security::Implicit, 465)
        );
        assert!(SmtpClient::from_url("http://relay", t, 1).is_err());
        assert!(SmtpClient::from_url("smtp://relay?tls=sometimes", t, 1).is_err());
    }

    #[test]
    fn credentials_without_tls_need_the_explicit_flag() {
        let t = Duration::from_secs(1);
        let err = SmtpClient::from_url("smtp://u:hunter2@relay:587", t, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("auth_without_tls=true"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let allowed =
            SmtpClient::from_url("smtp://u:p@relay:25?auth_without_tls=true", t, 1).unwrap();
        assert!(allowed.auth_without_tls);
        // With TLS asked for, or no credentials, nothing to allow.
        for ok in [
            "smtp://u:p@relay?tls=required",
            "smtp://u:p@relay?tls=opportunistic",
            "smtps://u:p@relay",
            "smtp://relay:25",
        ] {
            let client = SmtpClient::from_url(ok, t, 1).unwrap();
            assert!(!client.auth_without_tls, "{ok}");
        }
        assert!(SmtpClient::from_url("smtp://relay?auth_without_tls=yes", t, 1).is_err());
    }

    #[test]
    fn user_info_is_percent_decoded() {
        assert_eq!(percent_decode("u%40x.com").unwrap(), "u@x.com");
        assert_eq!(percent_decode("100%").unwrap(), "100%");
    }
}
