//! The whole flow against a real latchkey, through this crate only.
//!
//! `clients/run-e2e.sh rust` (from the repository root, after `cargo build`)
//! starts the server and sets `LATCHKEY_E2E_*`. Without them every test here
//! prints why it skips and passes, so a plain `cargo test` works anywhere;
//! run-e2e.sh checks that each test ran to its end (`LATCHKEY_E2E_RAN`).

use std::{
    future::Future,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime},
};

use latchkey_client::{
    Client, GrpcJwks, StatusDetails, Verifier, VerifyError,
    proto::{ErrorReason, RefreshRequest, RevokeRequest, StartAuthRequest, VerifyRequest},
};
use tonic::Code;

/// The server run-e2e.sh started, for one test.
struct Server {
    test: &'static str,
    grpc: String,
    http: String,
    api_key: String,
    mailbox: PathBuf,
    issuer: String,
    audience: String,
    binary: PathBuf,
}

/// The server, or `None` (and a line on stderr) when none was started.
fn server(test: &'static str) -> Option<Server> {
    let Ok(grpc) = std::env::var("LATCHKEY_E2E_GRPC") else {
        // Straight to stderr: the test harness captures only print macros.
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: LATCHKEY_E2E_GRPC is unset (run clients/run-e2e.sh rust)"
        );
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset"));
    Some(Server {
        test,
        grpc: format!("http://{grpc}"),
        http: var("LATCHKEY_E2E_HTTP"),
        api_key: var("LATCHKEY_E2E_API_KEY"),
        mailbox: var("LATCHKEY_E2E_MAILBOX").into(),
        issuer: var("LATCHKEY_ISSUER"),
        audience: var("LATCHKEY_AUDIENCE"),
        binary: var("LATCHKEY_BIN").into(),
    })
}

/// A test that ends without a panic records its name, for run-e2e.sh.
impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Ok(path) = std::env::var("LATCHKEY_E2E_RAN") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(file, "{}", self.test).unwrap();
        }
    }
}

impl Server {
    async fn client(&self) -> Client {
        Client::connect(&self.grpc, &self.api_key).await.unwrap()
    }

    /// The codes emailed to `address`, oldest first (the dev mailbox).
    fn codes_for(&self, address: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.mailbox).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            if let Some(code) = code_in(&path, address) {
                let modified = path.metadata().unwrap().modified().unwrap();
                found.push((modified, code));
            }
        }
        found.sort();
        found.into_iter().map(|(_, code)| code).collect()
    }

    async fn code_for(&self, address: &str) -> String {
        wait_for("the sign-in email", || async {
            self.codes_for(address).pop()
        })
        .await
    }
}

/// The code in the subject (`123456 is your … code`) of an email to `address`.
fn code_in(path: &Path, address: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let headers = text.split("\r\n\r\n").next()?.split("\n\n").next()?;
    let unfolded = headers.replace("\r\n ", " ").replace("\n ", " ");
    let header = |name: &str| {
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    if !header("To")?.contains(address) {
        return None;
    }
    let subject = header("Subject")?;
    let (code, rest) = subject.split_once(' ')?;
    (rest.starts_with("is your ") && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.to_owned())
}

/// Polls `probe` until it gives a value (the outbox and the key reload run on
/// the server's own schedule: there is no event to await from outside).
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh address per login.
fn address() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("rs-{nanos:x}-{n}@example.com")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn start(email: &str) -> StartAuthRequest {
    StartAuthRequest {
        email: email.to_owned(),
        ..Default::default()
    }
}

fn refresh(refresh_token: &str) -> RefreshRequest {
    RefreshRequest {
        refresh_token: refresh_token.to_owned(),
    }
}

#[tokio::test]
async fn the_whole_login_flow() {
    let Some(server) = server("the_whole_login_flow") else {
        return;
    };
    let mut client = server.client().await;
    let verifier = Verifier::builder(&server.issuer, &server.audience)
        .tenant("default")
        .http(&server.http)
        .unwrap();
    let user = address();

    let started = client
        .auth
        .start_auth(start(&user))
        .await
        .unwrap()
        .into_inner();
    let code = server.code_for(&user).await;
    assert_eq!(code.len(), started.code_length as usize);

    let wrong = if code.bytes().all(|b| b == b'0') {
        "1"
    } else {
        "0"
    }
    .repeat(code.len());
    let verify = |code: &str| VerifyRequest {
        session_id: started.session_id.clone(),
        code: code.to_owned(),
        ..Default::default()
    };
    let refused = client.auth.verify(verify(&wrong)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.reason().as_deref(), Some("CODE_INVALID"));
    assert_eq!(refused.error_reason(), Some(ErrorReason::CodeInvalid));

    let verified = client
        .auth
        .verify(verify(&code))
        .await
        .unwrap()
        .into_inner();
    let account = verified.user.clone().unwrap();
    assert!(verified.new_user);
    assert_eq!(account.email, user);

    let refreshed = client
        .auth
        .refresh(refresh(&verified.refresh_token))
        .await
        .unwrap();
    let refreshed = refreshed.into_inner();
    let claims = verifier.verify(&refreshed.token).await.unwrap();
    assert_eq!(claims.sub, account.id);
    assert_eq!(claims.sid, started.session_id);
    assert_eq!(claims.tid, "default");
    assert_eq!(claims.email, user);

    // A verifier of another audience refuses the same token.
    let strict = Verifier::builder(&server.issuer, "someone-else")
        .http(&server.http)
        .unwrap();
    let refusal = strict.verify(&refreshed.token).await;
    assert!(
        matches!(refusal, Err(VerifyError::InvalidToken(_))),
        "{refusal:?}"
    );

    // Rotate the signing key: the server signs with a kid the verifier has
    // not seen, and the verifier refetches the key set once to verify it.
    let old_kid = kid_of(&refreshed.token);
    let fetches = verifier.fetches().await;
    let rotated = std::process::Command::new(&server.binary)
        .args(["keys", "rotate", "--activate-in", "0s"])
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    // Refresh until the new key signs (the server reloads keys every second).
    let mut answer = refreshed;
    let deadline = Instant::now() + Duration::from_secs(20);
    while kid_of(&answer.token) == old_kid {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the new key to sign"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = client
            .auth
            .refresh(refresh(&answer.refresh_token))
            .await
            .unwrap();
        answer = next.into_inner();
    }
    let claims = verifier.verify(&answer.token).await.unwrap();
    assert_eq!(claims.sub, account.id);
    assert_eq!(verifier.fetches().await, fetches + 1);

    // Logout: the refresh token stops working.
    let last = answer.refresh_token;
    let revoke = RevokeRequest {
        refresh_token: last.clone(),
        ..Default::default()
    };
    client.auth.revoke(revoke).await.unwrap();
    let ended = client.auth.refresh(refresh(&last)).await.unwrap_err();
    assert_eq!(ended.reason().as_deref(), Some("REFRESH_TOKEN_INVALID"));
    assert_eq!(ended.error_reason(), Some(ErrorReason::RefreshTokenInvalid));
}

#[tokio::test]
async fn keys_over_grpc_verify_the_same_tokens() {
    let Some(server) = server("keys_over_grpc_verify_the_same_tokens") else {
        return;
    };
    let mut client = server.client().await;
    let user = address();
    let started = client
        .auth
        .start_auth(start(&user))
        .await
        .unwrap()
        .into_inner();
    let code = server.code_for(&user).await;
    let request = VerifyRequest {
        session_id: started.session_id,
        code,
        ..Default::default()
    };
    let token = client
        .auth
        .verify(request)
        .await
        .unwrap()
        .into_inner()
        .token;

    let verifier = Verifier::builder(&server.issuer, &server.audience)
        .tenant("default")
        .grpc(&client.auth);
    assert_eq!(verifier.verify(&token).await.unwrap().email, user);
    // The token names its tenant: a verifier for another tenant refuses it,
    // even with the right keys.
    let other = Verifier::builder(&server.issuer, &server.audience)
        .tenant("another")
        .source(GrpcJwks::new(client.auth.clone(), "default"));
    let refusal = other.verify(&token).await;
    assert!(
        matches!(refusal, Err(VerifyError::InvalidToken(_))),
        "{refusal:?}"
    );
}

#[tokio::test]
async fn a_rate_limited_call_says_when_to_retry() {
    let Some(server) = server("a_rate_limited_call_says_when_to_retry") else {
        return;
    };
    let mut client = server.client().await;
    let user = address();
    let mut limited = None;
    for _ in 0..10 {
        // The run allows 3 emails per address.
        if let Err(status) = client.auth.start_auth(start(&user)).await {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("no rate limit after 10 emails to one address");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(limited.error_reason(), Some(ErrorReason::RateLimited));
    assert!(
        limited
            .retry_after()
            .is_some_and(|wait| wait > Duration::ZERO),
        "{limited:?}"
    );
}

#[tokio::test]
async fn bad_input_and_bad_keys_are_decoded() {
    let Some(server) = server("bad_input_and_bad_keys_are_decoded") else {
        return;
    };
    let mut client = server.client().await;
    let bad = client
        .auth
        .start_auth(start("not an address"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.error_reason(), Some(ErrorReason::InvalidArgument));
    assert_eq!(bad.field().as_deref(), Some("email"));

    let mut stranger = Client::connect(&server.grpc, "lk_app_nope_nope")
        .await
        .unwrap();
    let unknown = stranger
        .auth
        .start_auth(start(&address()))
        .await
        .unwrap_err();
    assert_eq!(unknown.error_reason(), Some(ErrorReason::Unauthenticated));
}
