//! The test harness: a real latchkey server on port 0, over a fresh SQLite
//! file or a fresh PostgreSQL database, sending mail to a real SMTP server
//! (mailin-embedded) over TCP on 127.0.0.1.

pub use crate::client::{ApiClient, ApiError, Transport};

mod app;
mod authenticator;
mod db;
mod process;
mod smtp;
mod tokens;

pub use app::*;
pub use authenticator::*;
pub use db::*;
pub use process::*;
pub use smtp::*;
pub use tokens::*;

pub use latchkey::store::Backend;

/// PostgreSQL used by the tests; `DATABASE_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// What a test runs against.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub backend: Backend,
    pub transport: Transport,
}

impl From<Backend> for Case {
    fn from(backend: Backend) -> Self {
        Self {
            backend,
            transport: Transport::Grpc,
        }
    }
}

/// Runs one behaviour on both backends and both transports:
/// `matrix!(name);` expects an `async fn name(case: Case)` and makes
/// `name::{sqlite_grpc, sqlite_http, postgres_grpc, postgres_http}`.
#[macro_export]
macro_rules! matrix {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::helpers::{Backend, Case, Transport};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_grpc() {
                super::$name(Case { backend: Backend::Sqlite, transport: Transport::Grpc }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_http() {
                super::$name(Case { backend: Backend::Sqlite, transport: Transport::Http }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_grpc() {
                super::$name(Case { backend: Backend::Postgres, transport: Transport::Grpc }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_http() {
                super::$name(Case { backend: Backend::Postgres, transport: Transport::Http }).await
            }
        }
    )+};
}

/// Runs one behaviour on both backends: `both_backends!(name);` expects an
/// `async fn name(backend: Backend)` and makes `name::sqlite` and
/// `name::postgres` tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )+};
}
