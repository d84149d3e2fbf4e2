//! Start-up and shutdown: connect and migrate the database, load the keys,
//! bind the gRPC and HTTP listeners (port 0 works: tests read the real
//! addresses), then serve until the shutdown token fires.

mod health;
mod setup;

pub use health::{DATABASE_SERVICE, LIVENESS_SERVICE};
use health::{Health, draining, watch_database};
use setup::{
    announce_development_key, cors_layer, refuse_silent_dev_mailbox, smtp_send_bound,
    tighten_data_dir,
};
pub use setup::{load_kek, open_store, redact_url};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::{
    api::{
        Api, Readiness,
        admin::GrpcAdmin,
        grpc::{GrpcAuth, MAX_REQUEST_BYTES, oversized_request_as_invalid_argument},
        openapi, rest,
    },
    auth::{
        AuthService, Parts,
        admin::{Admin, Live, create_development_key},
        apikeys::ApiKeys,
        keys::KeyRings,
        tenants::Tenants,
    },
    clock::Clock,
    config::Settings,
    limits::Limits,
    mail::{
        outbox::{OutboxWorker, WorkerSettings},
        templates::Templates,
        transport::Transport,
    },
    proto::{self},
    store::Store,
    telemetry::{self, RpcLayer},
};

/// A bound, ready-to-run service.
pub struct Server {
    settings: Settings,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    store: Store,
    auth: AuthService,
    keys: KeyRings,
    worker: OutboxWorker,
    admin: Admin,
    clock: Clock,
    development_key: Option<String>,
}

impl Server {
    /// Connects, migrates, loads keys and binds the listener.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        settings.validate()?;
        refuse_silent_dev_mailbox(&settings)?;
        tighten_data_dir(&settings.data_dir)?;
        let kek = load_kek(&settings)?;
        let store = open_store(&settings).await?;

        let transport = match &settings.smtp_url {
            Some(url) => Transport::smtp(
                url.expose(),
                settings.smtp_timeout,
                settings.smtp_send_timeout,
                usize::try_from(settings.smtp_max_connections).unwrap_or(8),
            )?,
            None => {
                let dir = settings.data_dir.join("mailbox");
                tracing::warn!(
                    dir = %dir.display(),
                    "no LATCHKEY_SMTP_URL configured: emails go to the DEV MAILBOX and codes are \
                     logged (development only)"
                );
                Transport::dev_mailbox(dir)
            }
        };
        let defaults = settings.default_policy();
        let tenants = Tenants::load(store.clone(), defaults)
            .await
            .context("loading the tenants")?;
        // Every tenant signs with keys of its own.
        let tenant_ids: Vec<String> = tenants.all().iter().map(|t| t.id.clone()).collect();
        let keys = KeyRings::open(
            store.clone(),
            kek.clone(),
            clock.clone(),
            settings.signing_alg,
            tenant_ids.iter().map(String::as_str),
        )
        .await
        .context("loading the signing keys")?;
        let api_keys = ApiKeys::load(store.clone(), clock.clone())
            .await
            .context("loading the API keys")?;
        let admin = Admin::new(
            store.clone(),
            tenants.clone(),
            Some(Live {
                api_keys: api_keys.clone(),
                signing_keys: keys.clone(),
            }),
            clock.clone(),
        );
        // Zero-setup development: the first start on the embedded SQLite
        // database without SMTP makes an app key and shows it once. Never
        // with PostgreSQL or SMTP configured (that is not a laptop).
        let development_key =
            if transport.is_dev_mailbox() && store.backend() == crate::store::Backend::Sqlite {
                let key = create_development_key(&admin).await?;
                if let Some(key) = &key {
                    announce_development_key(&settings, key)?;
                }
                key
            } else {
                None
            };

        let wake = Arc::new(Notify::new());
        let templates = Arc::new(
            Templates::load(settings.template_dir.as_deref())
                .context("LATCHKEY_TEMPLATE_DIR (--template-dir)")?,
        );
        let worker = OutboxWorker {
            store: store.clone(),
            kek: kek.clone(),
            clock: clock.clone(),
            transport,
            templates,
            tenants: tenants.clone(),
            settings: WorkerSettings {
                poll_interval: settings.outbox_poll_interval,
                retry_base: settings.outbox_retry_base,
                retry_max: settings.outbox_retry_max,
                // A batch is sent concurrently; the batch matches the SMTP
                // connection pool. Every step of a send has its deadline
                // (connecting, the session set-up and MAIL, RCPT, DATA: the
                // SMTP timeout each; the end of the message: the send
                // timeout), so a send ends within their sum; the lease is
                // renewed while it runs, so it can be much shorter.
                lease: settings.outbox_lease,
                send_timeout: smtp_send_bound(&settings),
                max_attempts: settings.outbox_max_attempts,
                batch: i64::from(settings.smtp_max_connections),
            },
            wake: wake.clone(),
            failing: crate::telemetry::Outage::new("email delivery"),
            breaker: Default::default(),
        };
        let auth = AuthService::new(Parts {
            store: store.clone(),
            keys: keys.clone(),
            tenants,
            api_keys,
            kek,
            clock: clock.clone(),
            outbox_wake: wake,
        });

        let grpc_listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC listener on {}", settings.grpc_addr))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", settings.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        let metrics_listener = TcpListener::bind(settings.metrics_addr)
            .await
            .with_context(|| {
                format!("binding the metrics listener on {}", settings.metrics_addr)
            })?;
        let metrics_addr = metrics_listener.local_addr()?;
        Ok(Self {
            settings,
            grpc_listener,
            grpc_addr,
            http_listener,
            http_addr,
            metrics_listener,
            metrics_addr,
            store,
            auth,
            keys,
            worker,
            admin,
            clock,
            development_key,
        })
    }

    /// The administration operations (tests and tools use it in-process).
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The key made by this start for zero-setup development, if any.
    pub fn development_key(&self) -> Option<&str> {
        self.development_key.as_deref()
    }

    /// The address the gRPC listener is bound to.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the HTTP listener (JSON gateway) is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the metrics listener is bound to.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The store (for tests and admin commands).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` fires, then: readiness goes NOT_SERVING,
    /// in-flight calls finish (bounded by the shutdown grace), background
    /// work stops after its current item, and the pool closes.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            grpc_listener,
            grpc_addr,
            http_listener,
            http_addr,
            metrics_listener,
            metrics_addr,
            store,
            auth,
            keys,
            worker,
            admin,
            clock,
            development_key: _,
        } = self;

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health {
            reporter,
            readiness: Readiness::default(),
            stopping: Arc::default(),
        };
        health.set(true).await;
        health
            .reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        // Both reflection versions: grpcurl 1.8 and Python's client speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Public services take small requests only, like the API's own.
        let health_service = health_service.max_decoding_message_size(MAX_REQUEST_BYTES);
        let reflection_v1 = reflection()
            .build_v1()?
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let reflection_v1alpha = reflection()
            .build_v1alpha()?
            .max_decoding_message_size(MAX_REQUEST_BYTES);

        let background = CancellationToken::new();
        let mut tasks: Vec<JoinHandle<()>> = vec![
            tokio::spawn(worker.run(background.clone())),
            tokio::spawn(
                keys.reload_periodically(settings.key_reload_interval, background.clone()),
            ),
            tokio::spawn(auth.clone().sync_periodically(
                Duration::from_secs(1),
                Duration::from_secs(30),
                background.clone(),
            )),
            tokio::spawn(auth.clone().purge_periodically(
                settings.rate_limit_window,
                Duration::from_secs(300),
                background.clone(),
            )),
            tokio::spawn(watch_database(
                store.clone(),
                health.clone(),
                settings.readiness_interval,
                background.clone(),
            )),
            tokio::spawn(crate::metrics::upkeep_periodically(background.clone())),
        ];

        let api = Api::new(auth);
        let cors = cors_layer(&settings.cors_allowed_origins)?;
        let limits = Limits::from_settings(&settings);
        let grpc = limits
            .grpc_server()
            // HTTP/1.1 for grpc-web (browsers and their tooling).
            .accept_http1(true)
            .layer(tower::util::option_layer(cors.clone()))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RpcLayer::new("grpc", telemetry::grpc_call_name))
            // Inside the RPC layer, so the metrics see the rewritten code.
            .layer(tower::util::MapResponseLayer::new(
                oversized_request_as_invalid_argument::<tonic::body::Body>,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(GrpcAuth::server(api.clone()))
            .add_service(GrpcAdmin::server(admin, api.clone()))
            .serve_with_incoming_shutdown(
                limits.grpc_incoming(grpc_listener),
                draining(shutdown.clone(), health.clone(), settings.shutdown_delay),
            );

        let router = rest::router(rest::RestState {
            api,
            readiness: health.readiness.clone(),
            jwks_max_age: settings.jwks_max_age,
            openapi: openapi::document_text().into(),
        })
        .layer(RpcLayer::new("http", rest::http_call_name))
        .layer(tower::util::option_layer(cors));
        let http = limits.serve_http(
            http_listener,
            router,
            draining(shutdown.clone(), health.clone(), settings.shutdown_delay),
        );

        // Scrapes keep working through the drain; this listener closes with
        // the background work.
        tasks.push(tokio::spawn({
            let stop = background.clone();
            let router = crate::metrics::router(store.clone(), clock);
            async move {
                let served = axum::serve(metrics_listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the metrics listener failed");
                }
            }
        }));

        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            metrics = %metrics_addr,
            database = ?store.backend(),
            "latchkey is serving"
        );
        let both = async {
            let (grpc, http) = tokio::join!(grpc, http);
            grpc.map_err(anyhow::Error::from)?;
            http.map_err(anyhow::Error::from)
        };
        tokio::pin!(both);
        let served = tokio::select! {
            result = &mut both => result,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(settings.shutdown_delay + settings.shutdown_grace).await;
            } => {
                tracing::warn!("calls still running after the shutdown grace: exiting without them");
                Ok(())
            }
        };

        // Background work stops after its current item: bounded, so a mail
        // server or a database connection that hangs cannot hold the exit
        // (an email being sent is sent again once its lease ends).
        background.cancel();
        let stopped = tokio::time::timeout(BACKGROUND_STOP, async {
            for task in tasks {
                let _ = task.await;
            }
            store.close().await;
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(
                timeout_ms = BACKGROUND_STOP.as_millis() as u64,
                "background work did not stop in time: exiting anyway"
            );
        }
        tracing::info!("stopped");
        served
    }
}

/// How long background work (outbox worker, sync loops, the pool) may take
/// to stop once the listeners have drained. Deployments must allow
/// `LATCHKEY_SHUTDOWN_DELAY + LATCHKEY_SHUTDOWN_GRACE + 3 s` plus the 5 s
/// telemetry flush (the Helm chart checks).
pub const BACKGROUND_STOP: Duration = Duration::from_secs(3);
