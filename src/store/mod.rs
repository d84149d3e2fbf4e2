//! The store: PostgreSQL or SQLite behind one API. Every query is written once
//! in SQL both accept (`$N` placeholders, text ids, integer millisecond times
//! from the service clock, conditional `UPDATE … RETURNING` for single use);
//! where a dialect truly differs both texts sit side by side. The conformance
//! tests run every operation on both backends.

/// A closed set of words stored in a TEXT column: each variant's spelling is
/// written once, encoded with `as_str` when binding and decoded with
/// `TryFrom<String>` (`#[sqlx(try_from = "String")]` on a row's field), so
/// no layer above the store compares strings.
macro_rules! stored_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> std::result::Result<Self, String> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), text)),
                }
            }
        }
    };
}

/// A stored word no variant spells (a row written by a newer version, or
/// corruption).
fn decode_error(message: String) -> StoreError {
    StoreError(sqlx::Error::Decode(message.into()))
}

mod addresses;
mod deadline;
mod keys;
mod limits;
mod outbox;
mod passkeys;
mod refresh_tokens;
mod sessions;
mod tenants;
mod users;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use addresses::AddressRewrite;
pub use keys::{NewSigningKey, SigningKeyRow};
pub use limits::{ExistingKey, Hit, NewIdempotencyKey};
pub use outbox::{
    ClaimedMail, MailKind, NewMail, OUTBOX_CHANNEL, OutboxCounts, OutboxListener, OutboxRow,
    Outcome, PLAN_CHECKED_STATEMENTS, UNCONFIRMED,
};
pub use passkeys::{Ceremony, CeremonyKind, NewCeremony, NewPasskey, PasskeyRow, PasskeyUse};
pub use refresh_tokens::{ActiveSession, RotatedRefreshToken};
pub use sessions::{
    CodeAttempt, LinkedSession, Method, NewSession, PendingSession, SessionEnd, SessionRow,
    SessionStage, SessionStatus,
};
pub use tenants::{ApiKeyRow, Counter, TenantRow};
pub use users::{UserQuery, UserRow};

use deadline::{Deadline, Stalls};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// A store failure. Connection-level failures are "unavailable" (the caller
/// may retry); anything else is a bug or corruption.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] sqlx::Error);

impl StoreError {
    /// True when the database could not be reached (retrying later may work).
    pub fn is_unavailable(&self) -> bool {
        match &self.0 {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // The TLS negotiation that opens every PostgreSQL connection
            // (sslmode prefer/require) read garbage or nothing: the peer
            // closed the connection, as an unreachable database does.
            sqlx::Error::Protocol(message) => message.contains("SSLRequest"),
            sqlx::Error::Database(db) => {
                // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout,
                // PostgreSQL's "cannot connect now" / admin shutdown classes,
                // and its statement and idle-in-transaction timeouts.
                let code = db.code().unwrap_or_default();
                matches!(
                    code.as_ref(),
                    "5" | "6" | "517" | "57P01" | "57P02" | "57P03" | "57014" | "25P03"
                ) || code.starts_with("08")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database engine a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone, Debug)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The database. Cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The bound on a call that takes a connection from the pool.
    deadline: Deadline,
    /// The bound on a statement inside a transaction.
    statement_deadline: Duration,
}

/// Runs `$body` with `$conn` bound to the pool of whichever backend the store
/// uses, in a `db` span named `$op` (a child of the RPC's span in traces),
/// within the store's deadline (see [`Deadline`]). The body is compiled once
/// per backend, so the same query text and binds serve both.
macro_rules! on_pool {
    ($store:expr, $op:literal, |$conn:ident| $body:expr) => {{
        let store: &crate::store::Store = &$store;
        match &store.pool {
            crate::store::Pool::Postgres($conn) => crate::store::in_db_span!(
                $op,
                "postgresql",
                store.deadline.bound($op, async { $body }).await
            ),
            crate::store::Pool::Sqlite($conn) => crate::store::in_db_span!(
                $op,
                "sqlite",
                store.deadline.bound($op, async { $body }).await
            ),
        }
    }};
}

/// Like [`on_pool!`], inside a transaction.
macro_rules! on_tx {
    ($tx:expr, $op:literal, |$conn:ident| $body:expr) => {
        match &mut $tx.inner {
            crate::store::TxInner::Postgres(tx) => {
                let $conn = &mut **tx;
                crate::store::in_db_span!(
                    $op,
                    "postgresql",
                    $tx.deadline.bound($op, async { $body }).await
                )
            }
            crate::store::TxInner::Sqlite(tx) => {
                let $conn = &mut **tx;
                crate::store::in_db_span!(
                    $op,
                    "sqlite",
                    $tx.deadline.bound($op, async { $body }).await
                )
            }
        }
    };
}

/// The span of one database statement (OpenTelemetry database conventions;
/// the operation is the store method, never a value). Only inside another
/// span (a call, an email delivery): the background loops' statements would
/// otherwise each make a trace of their own, every second.
macro_rules! db_span {
    ($op:literal, $system:literal) => {
        if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "db",
                otel.name = concat!("db ", $op),
                otel.kind = "client",
                db.system.name = $system,
                db.operation.name = $op,
            )
        }
    };
}
/// Awaits `$body` (an expression with `.await`s) in [`db_span!`].
macro_rules! in_db_span {
    ($op:literal, $system:literal, $body:expr) => {
        tracing::Instrument::instrument(async { $body }, crate::store::db_span!($op, $system)).await
    };
}
pub(crate) use {db_span, in_db_span, on_pool, on_tx};

/// One database transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    inner: TxInner,
    deadline: Deadline,
}

enum TxInner {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        use tracing::Instrument;
        let deadline = self.deadline;
        match self.inner {
            TxInner::Postgres(tx) => {
                deadline
                    .bound("commit", tx.commit())
                    .instrument(db_span!("commit", "postgresql"))
                    .await?
            }
            TxInner::Sqlite(tx) => {
                deadline
                    .bound("commit", tx.commit())
                    .instrument(db_span!("commit", "sqlite"))
                    .await?
            }
        }
        Ok(())
    }
}

/// A pool's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// How to open the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// The longest one statement may take. PostgreSQL cancels it then
    /// (`statement_timeout`); every call (statement, begin, commit) is
    /// abandoned a second later whatever the backend (see [`Deadline`]).
    /// On SQLite it also bounds the wait for the write lock.
    pub statement_timeout: Duration,
    /// PostgreSQL ends a session left inside a transaction this long
    /// (`idle_in_transaction_session_timeout`), releasing its row locks: a
    /// process whose connection went silent cannot hold claimed rows.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
        }
    }
}

/// The session settings every PostgreSQL connection of the service starts
/// with (sent as startup options, no extra round trip): the statement and
/// idle-in-transaction timeouts (`0s` leaves the server's own), and TCP
/// keepalive probes from the server after 30 s of silence, so a session
/// whose client vanished ends within a minute or so. (The client's own
/// sockets are opened inside sqlx, which sets no keepalive: on this side
/// the per-call deadline does that job.)
fn postgres_session_settings(options: &StoreOptions) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("tcp_keepalives_idle", "30".to_owned()),
        ("tcp_keepalives_interval", "10".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ];
    for (name, value) in [
        ("statement_timeout", options.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            options.idle_in_transaction_timeout,
        ),
    ] {
        if !value.is_zero() {
            settings.push((name, format!("{}ms", value.as_millis().max(1))));
        }
    }
    settings
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). A SQLite file and
    /// its directory are created when missing. Does not migrate.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let stalls = Arc::new(Stalls::new());
        let pool = if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed login survives power loss, as on PostgreSQL.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(options.statement_timeout)
                .foreign_keys(true);
            let file = connect.get_filename();
            if !url.contains("mode=memory") && file != Path::new(":memory:") {
                if let Some(dir) = file.parent() {
                    ensure_dir(dir)?;
                }
                // 0600 from the start: SQLite gives `-wal` and `-shm` its mode.
                crate::files::precreate_sqlite_file(file)
                    .map_err(|e| StoreError(sqlx::Error::Io(e)))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.min(8))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            Pool::Sqlite(pool)
        } else {
            let connect =
                PgConnectOptions::from_str(url)?.options(postgres_session_settings(options));
            let checked = stalls.clone();
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .after_release(move |conn, _| {
                    let checked = checked.clone();
                    Box::pin(async move {
                        if !checked.checking() {
                            return Ok(true);
                        }
                        // An error closes the connection at once.
                        use sqlx::Connection;
                        match tokio::time::timeout(Stalls::PING, conn.ping()).await {
                            Ok(Ok(())) => Ok(true),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())),
                        }
                    })
                })
                .connect_with(connect)
                .await?;
            Pool::Postgres(pool)
        };
        // A second more than the server's own timeout, so that one answers
        // first when it can; a call that needs a connection first may also
        // wait for one (the acquire timeout bounds that).
        let statement_deadline = options.statement_timeout + Duration::from_secs(1);
        Ok(Self {
            pool,
            deadline: Deadline {
                after: statement_deadline + options.acquire_timeout,
                stalls,
            },
            statement_deadline,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
        }
    }

    /// Applies pending migrations. On PostgreSQL this holds an advisory lock,
    /// so replicas starting together migrate once. Then finishes the data
    /// rewrites a migration left due (0004: canonical addresses, computed by
    /// `canonical`, the domain's rule: the store does not know it).
    pub async fn migrate(
        &self,
        canonical: fn(&str) -> Option<String>,
    ) -> Result<(), anyhow::Error> {
        let migrator = self.migrator();
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut conn = untimed(pool).await?;
                let run = migrator.run(&mut *conn).await;
                conn.close_on_drop();
                run?
            }
            Pool::Sqlite(pool) => migrator.run(pool).await?,
        }
        if let Some(done) = self.rewrite_addresses(canonical).await? {
            tracing::info!(
                users = done.users,
                superseded_users = done.superseded,
                sessions = done.sessions,
                outbox = done.outbox,
                "stored email addresses made canonical"
            );
            if done.superseded > 0 {
                tracing::warn!(
                    superseded_users = done.superseded,
                    "some users shared one mailbox: the oldest keeps the address, the others \
                     are reachable only by id (their email reads \"(superseded by <id>)\")"
                );
            }
        }
        Ok(())
    }

    /// Applies the migrations up to `version` only: tests use it to write
    /// rows as an older release would have, then migrate the rest.
    #[doc(hidden)]
    pub async fn migrate_to(&self, version: i64) -> Result<(), anyhow::Error> {
        let migrator = self.migrator();
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut conn = untimed(pool).await?;
                let run = migrator.run_to(version, &mut *conn).await;
                conn.close_on_drop();
                run?
            }
            Pool::Sqlite(pool) => migrator.run_to(version, pool).await?,
        }
        Ok(())
    }

    /// True when the database answers and every migration this binary knows
    /// has been applied (the readiness rule).
    pub async fn is_ready(&self) -> bool {
        let latest = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        const APPLIED: &str =
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE";
        let applied: std::result::Result<i64, _> = on_pool!(self, "is_ready", |pool| {
            sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(pool).await
        });
        matches!(applied, Ok(v) if v >= latest)
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes
    /// cannot fail to upgrade its lock; waiting uses the busy timeout.
    pub async fn begin(&self) -> Result<Tx> {
        use tracing::Instrument;
        let inner = match &self.pool {
            Pool::Postgres(pool) => TxInner::Postgres(
                self.deadline
                    .bound("begin", pool.begin())
                    .instrument(db_span!("begin", "postgresql"))
                    .await?,
            ),
            Pool::Sqlite(pool) => TxInner::Sqlite(
                self.deadline
                    .bound("begin", pool.begin_with("BEGIN IMMEDIATE"))
                    .instrument(db_span!("begin", "sqlite"))
                    .await?,
            ),
        };
        Ok(Tx {
            inner,
            deadline: Deadline {
                after: self.statement_deadline,
                stalls: self.deadline.stalls.clone(),
            },
        })
    }

    /// Closes every connection (shutdown).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    /// This process's connections, for metrics.
    pub fn pool_usage(&self) -> PoolUsage {
        let (size, idle, max) = match &self.pool {
            Pool::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Pool::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        PoolUsage {
            in_use: size - idle,
            idle,
            max,
        }
    }
}

/// A connection without the service's statement and idle-in-transaction
/// timeouts, for migrations (an index build may take long). Close it after.
async fn untimed(pool: &PgPool) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .execute(&mut *conn)
        .await?;
    Ok(conn)
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    crate::files::create_private_dir(dir).map_err(|e| StoreError(sqlx::Error::Io(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `migrations/postgres` and `migrations/sqlite` are numbered in
    /// lockstep: the same versions with the same names, so a store on either
    /// engine is ready at the same version.
    #[test]
    fn both_engines_have_the_same_migrations() {
        let listed = |m: &Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        let postgres = listed(&POSTGRES_MIGRATIONS);
        assert!(!postgres.is_empty());
        assert_eq!(postgres, listed(&SQLITE_MIGRATIONS));
    }
}
