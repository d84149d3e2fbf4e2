//! A real SMTP server on 127.0.0.1 that collects what the service sends.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use mailin_embedded::{Handler, Response, response};
use tokio::sync::Notify;

/// A message the SMTP server accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(self.data.as_bytes()).expect("a MIME message")
    }

    /// The sign-in code, read from the subject line.
    pub fn code(&self) -> String {
        let subject = self
            .header("Subject")
            .unwrap_or_else(|| panic!("no Subject in {}", self.data));
        subject
            .split_whitespace()
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in subject {subject:?}"))
            .to_owned()
    }

    /// A header, decoded (RFC 2047).
    pub fn header(&self, name: &str) -> Option<String> {
        use mailparse::MailHeaderMap;
        self.parsed().headers.get_first_value(name)
    }

    /// The decoded body of the part with this MIME type.
    pub fn part(&self, mime: &str) -> String {
        fn find(m: &mailparse::ParsedMail<'_>, mime: &str) -> Option<String> {
            if m.ctype.mimetype == mime {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(|p| find(p, mime))
        }
        find(&self.parsed(), mime).unwrap_or_else(|| panic!("no {mime} part in {}", self.data))
    }

    /// The magic link in the text part.
    pub fn link(&self) -> String {
        let text = self.part("text/plain");
        text.split_whitespace()
            .find(|w| w.contains("token=lkl_"))
            .unwrap_or_else(|| panic!("no magic link in {text}"))
            .to_owned()
    }

    /// The link token of the magic link.
    pub fn link_token(&self) -> String {
        let link = self.link();
        link.rsplit("token=").next().unwrap().to_owned()
    }
}

#[derive(Default)]
struct Inbox {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    /// Recipients refused with a permanent 550.
    rejected: Mutex<Vec<String>>,
    /// How long the server takes to accept a message (a slow relay).
    delay: Mutex<Duration>,
    /// The same for messages to one recipient (overrides `delay`).
    delay_for: Mutex<Vec<(String, Duration)>>,
    /// Messages being accepted right now, and the most there ever were.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    /// Answer every MAIL with 421 (service not available, try later).
    unavailable: std::sync::atomic::AtomicBool,
}

/// A real SMTP server (mailin-embedded) on 127.0.0.1, collecting messages.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
}

#[derive(Clone)]
struct SinkHandler {
    inbox: Arc<Inbox>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for SinkHandler {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        if self
            .inbox
            .unavailable
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            response::NO_SERVICE
        } else {
            response::OK
        }
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let to = to.trim_matches(['<', '>']);
        if self.inbox.rejected.lock().unwrap().iter().any(|r| r == to) {
            response::NO_MAILBOX
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // A thread per connection: only this message waits.
        let own = self
            .inbox
            .delay_for
            .lock()
            .unwrap()
            .iter()
            .find_map(|(to, d)| {
                self.to
                    .iter()
                    .any(|t| t.trim_matches(['<', '>']) == to)
                    .then_some(*d)
            });
        let delay = own.unwrap_or(*self.inbox.delay.lock().unwrap());
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inbox.in_flight.fetch_add(1, SeqCst) + 1;
        self.inbox.most_in_flight.fetch_max(now, SeqCst);
        std::thread::sleep(delay);
        self.inbox.in_flight.fetch_sub(1, SeqCst);
        let mail = ReceivedMail {
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
        };
        self.inbox.mails.lock().unwrap().push(mail);
        self.inbox.arrived.notify_waiters();
        response::OK
    }
}

impl SmtpSink {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// An address with nothing listening yet (for "SMTP is down"), and
    /// later [`SmtpSink::start_at`] on it.
    pub fn reserve_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    pub fn start_at(addr: SocketAddr) -> Self {
        Self::start_on(TcpListener::bind(addr).expect("bind the reserved SMTP port"))
    }

    fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Inbox::default());
        let handler = SinkHandler {
            inbox: inbox.clone(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = mailin_embedded::Server::new(handler);
        // Thread per connection: more threads than the service pools connections.
        server
            .with_name("sink.test")
            .with_tcp_listener(listener)
            .with_num_threads(32);
        // mailin has no shutdown: the thread ends with the test process.
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { addr, inbox }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Refuse mail to `to` permanently (550) until [`SmtpSink::accept`].
    pub fn reject(&self, to: &str) {
        self.inbox.rejected.lock().unwrap().push(to.to_owned());
    }

    /// Answer each message's end of data only after `delay` (a slow relay).
    pub fn set_delay(&self, delay: Duration) {
        *self.inbox.delay.lock().unwrap() = delay;
    }

    /// Answer every message with 421 (a relay refusing mail for now) while
    /// `unavailable`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inbox
            .unavailable
            .store(unavailable, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most messages this server was ever accepting at once.
    pub fn most_in_flight(&self) -> usize {
        self.inbox
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answer the end of data of messages to `to` only after `delay`.
    pub fn set_delay_for(&self, to: &str, delay: Duration) {
        self.inbox
            .delay_for
            .lock()
            .unwrap()
            .push((to.to_owned(), delay));
    }

    pub fn accept(&self, to: &str) {
        self.inbox.rejected.lock().unwrap().retain(|r| r != to);
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.inbox.mails.lock().unwrap().clone()
    }

    /// The messages to one address so far, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<ReceivedMail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .collect()
    }

    /// The first message to `to`, waiting for it up to `within` (woken by
    /// each arrival, copying only that message: cheap with many waiters).
    pub async fn first_to(&self, to: &str, within: Duration) -> Option<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.inbox.arrived.notified();
            let found = self
                .inbox
                .mails
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.to.iter().any(|t| t == to))
                .cloned();
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// Waits (up to 10 s) until a message to `to` has arrived and returns the
    /// newest such message.
    pub async fn wait_for(&self, to: &str) -> ReceivedMail {
        self.wait_for_count(to, 1).await.pop().unwrap()
    }

    /// Waits (up to 10 s) until `n` messages to `to` have arrived.
    pub async fn wait_for_count(&self, to: &str, n: usize) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.inbox.arrived.notified();
            let mails = self.mails_to(to);
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{n} mail(s) to {to} did not arrive within 10 s; got {}",
                    mails.len()
                );
            }
        }
    }
}
