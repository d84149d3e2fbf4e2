//! latchkey: passwordless email authentication for backends, over gRPC.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into this
//! library; the integration tests drive the same [`server::Server`] on port 0.

/// The gRPC transport: proto <-> domain conversions and status mapping.
pub mod api;
/// The login flows and their rules: start, verify, refresh, revoke, keys.
pub mod auth;
/// The commands of the binary: serve, migrate, keys, tenants, API keys.
pub mod cli;
/// Time as the service sees it; shiftable in tests.
pub mod clock;
/// Typed configuration from flags and `LATCHKEY_*` variables.
pub mod config;
/// The one domain error and its machine-readable codes.
pub mod error;
/// Files at rest in the data directory: owner-only modes.
pub mod files;
/// The key-encryption key: seals private keys and queued mail at rest.
pub mod kek;
/// Connection limits of the gRPC port and the gateway.
pub mod limits;
/// Outgoing email: the outbox worker, SMTP and the dev mailbox, templates.
pub mod mail;
/// Prometheus metrics: names, recording, rendering.
pub mod metrics;
/// Binds the listeners, wires everything together and serves until shutdown.
pub mod server;
/// PostgreSQL and SQLite behind one store; every query written once.
pub mod store;
/// Logs, traces (OTLP when configured) and the per-RPC span and metrics layer.
pub mod telemetry;

/// Code generated from `proto/latchkey/v1/*.proto`.
pub mod proto {
    tonic::include_proto!("latchkey.v1");
    // The proto3 JSON mapping (camelCase, enums by name, RFC 3339 times).
    include!(concat!(env!("OUT_DIR"), "/latchkey.v1.serde.rs"));

    /// The encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("latchkey_descriptor");
}
