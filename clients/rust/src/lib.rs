//! The Rust client of latchkey, passwordless email login over gRPC.
//!
//! - [`proto`]: the generated messages and clients of `latchkey.v1`
//!   (`AuthService`, `AdminService`; no server code).
//! - [`Client`]: both services on one channel, the API key sent with every
//!   call ([`ApiKey`], a tonic interceptor).
//! - [`StatusDetails`]: `reason`, `retry_after` and `field` of a failed call,
//!   decoded from the status details (`google.rpc.ErrorInfo`, `RetryInfo`,
//!   `BadRequest`).
//! - [`Verifier`]: checks access tokens locally against the tenant's published
//!   keys (JWKS over HTTP or `GetJwks`), cached, refetched on an unknown `kid`.
//! - with the `axum` feature, [`axum`]: a tower layer and an extractor that
//!   admit only requests with a valid access token.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use latchkey_client::{Client, proto::StartAuthRequest};
//!
//! let mut client = Client::connect("http://127.0.0.1:50051", "lk_app_…").await?;
//! let started = client
//!     .auth
//!     .start_auth(StartAuthRequest { email: "ada@example.com".into(), ..Default::default() })
//!     .await?
//!     .into_inner();
//! # Ok(()) }
//! ```

#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod error;
#[cfg(test)]
mod testing;
mod verifier;

/// The generated code of the `latchkey.v1` protos: messages, enums
/// ([`proto::ErrorReason`], [`proto::Method`]) and the two clients.
/// [`proto::Jwk`] and [`proto::GetJwksResponse`] also (de)serialise as RFC 7517
/// JSON.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("latchkey.v1");
}

pub use client::{AdminClient, ApiKey, AuthClient, Client, ConnectError, InvalidApiKey};
pub use error::StatusDetails;
pub use verifier::{
    Claims, FetchError, GrpcJwks, HttpJwks, InvalidJwksUrl, JwksSource, Verifier, VerifierBuilder,
    VerifyError, jwks_url,
};

/// The README's quickstart compiles (`cargo test` runs its code blocks).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeQuickstart;

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_servers() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let server = std::fs::read_to_string(manifest).expect("the server's Cargo.toml");
        let package = server
            .split("[package]")
            .nth(1)
            .expect("the server's manifest has a [package]");
        let version = package
            .lines()
            .find_map(|line| line.strip_prefix("version = "))
            .expect("the server's version")
            .trim_matches('"');
        assert_eq!(env!("CARGO_PKG_VERSION"), version);
    }
}
