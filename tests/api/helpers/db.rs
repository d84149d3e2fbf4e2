//! Test databases: a fresh one per test, and the test's own pool to it.

use std::path::PathBuf;

use super::*;

/// A fresh, empty database for one test, dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = TempDir::new();
        match backend {
            Backend::Sqlite => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path.join("latchkey.db").display()
                ),
                backend,
                _dir: dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("latchkey_test_{}", uuid::Uuid::now_v7().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin} ({e}). Start it with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                         or point DATABASE_URL at one."
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("DATABASE_URL must name a database"),
                };
                Self {
                    url,
                    backend,
                    _dir: dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("latchkey-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The test's own pool to a test database.
pub enum TestPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestPool {
    pub async fn connect(db: &TestDb) -> Self {
        match db.backend {
            Backend::Sqlite => Self::Sqlite(sqlx::SqlitePool::connect(&db.url).await.unwrap()),
            Backend::Postgres => Self::Postgres(sqlx::PgPool::connect(&db.url).await.unwrap()),
        }
    }

    pub async fn strings(&self, sql: &'static str) -> Vec<String> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
            Self::Postgres(p) => sqlx::query_scalar::<_, String>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
        }
    }

    pub async fn blobs(&self, sql: &'static str) -> Vec<Option<Vec<u8>>> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar::<_, Option<Vec<u8>>>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
            Self::Postgres(p) => sqlx::query_scalar::<_, Option<Vec<u8>>>(sql)
                .fetch_all(p)
                .await
                .unwrap(),
        }
    }

    pub async fn exec(&self, sql: &'static str) {
        match self {
            Self::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
            Self::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
        }
    }

    pub async fn close(self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// A write lock held from outside the server.
pub enum WriteLock {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            Self::Sqlite(tx) => tx.rollback().await.unwrap(),
            Self::Postgres(tx) => tx.rollback().await.unwrap(),
        }
    }
}
