//! Where email goes: an SMTP relay (pooled connections), or for
//! development a mailbox directory of `.eml` files with the code also logged.

use std::{path::PathBuf, time::Duration};

use lettre::Message;

use super::smtp::SmtpClient;

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused this message for good (SMTP 5xx).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Connection problems, timeouts, 4xx: retry later.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The whole message went out but the server's answer to its end never
    /// came (timeout, connection lost): it may have been accepted. Not to
    /// be sent again while the server could still be taking the first copy.
    #[error("not confirmed: {0}")]
    Uncertain(String),
}

/// A message ready to go, with what the dev mailbox shows in the log.
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub message: Message,
    /// The code the message carries (logged by the dev mailbox only).
    pub code: &'a str,
    pub recipient: &'a str,
}

pub enum Transport {
    Smtp(SmtpClient),
    DevMailbox(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => f.write_str("Transport::Smtp"),
            Self::DevMailbox(dir) => write!(f, "Transport::DevMailbox({})", dir.display()),
        }
    }
}

impl Transport {
    /// An SMTP transport from a URL: `smtp://host:port` (plain),
    /// `smtp://…?tls=required` (STARTTLS), `smtps://…` (implicit TLS), with
    /// optional `user:password@` for AUTH.
    /// `timeout` bounds connecting and each SMTP command; `data_timeout`
    /// the wait for the answer to the end of a message; up to
    /// `connections` stay open for reuse (the outbox sends that many at a
    /// time).
    pub fn smtp(
        url: &str,
        timeout: Duration,
        data_timeout: Duration,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let client = SmtpClient::from_url(url, timeout, connections)
            .map_err(|e| anyhow::anyhow!("LATCHKEY_SMTP_URL: {e}"))?
            .with_data_timeout(data_timeout);
        Ok(Self::Smtp(client))
    }

    /// The development mailbox under `dir`.
    pub fn dev_mailbox(dir: PathBuf) -> Self {
        Self::DevMailbox(dir)
    }

    pub fn is_dev_mailbox(&self) -> bool {
        matches!(self, Self::DevMailbox(_))
    }

    /// Accepts a message that is not sent (a suppressed email), the way
    /// [`Self::send`] would have: through SMTP it needs the relay reachable
    /// (a pooled connection) and takes as long as the relay's last accepted
    /// message took, so the outbox records it at about the moment a real
    /// email would have been accepted. Nothing reaches the relay but the
    /// connection itself.
    pub async fn accept_unsent(&self) -> Result<(), SendError> {
        match self {
            Self::Smtp(smtp) => smtp.accept_unsent().await,
            Self::DevMailbox(_) => Ok(()),
        }
    }

    pub async fn send(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
        match self {
            Self::Smtp(smtp) => {
                let envelope = mail.message.envelope();
                smtp.send(
                    envelope.from().cloned(),
                    envelope.to().to_vec(),
                    &mail.message.formatted(),
                )
                .await
            }
            Self::DevMailbox(dir) => {
                let path = dir.join(format!("{}.eml", mail.id));
                let write = async {
                    crate::files::create_private_dir_async(dir).await?;
                    crate::files::write_private_file(&path, &mail.message.formatted()).await
                };
                write
                    .await
                    .map_err(|e| SendError::Transient(format!("{}: {e}", path.display())))?;
                if mail.code.is_empty() {
                    tracing::info!(
                        target: DEV_MAILBOX_TARGET,
                        to = mail.recipient,
                        file = %path.display(),
                        "DEV MAILBOX (development only, no email was sent): notice saved"
                    );
                } else {
                    tracing::info!(
                        target: DEV_MAILBOX_TARGET,
                        to = mail.recipient,
                        code = mail.code,
                        file = %path.display(),
                        "DEV MAILBOX (development only, no email was sent): sign-in code {}",
                        mail.code
                    );
                }
                Ok(())
            }
        }
    }
}

/// The log target of the development mailbox's lines (they carry the
/// address and the code): shown in the log, never exported as traces.
pub const DEV_MAILBOX_TARGET: &str = "latchkey::dev_mailbox";
