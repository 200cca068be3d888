//! Ordo's composition root: configuration, start-up (database, migrations, roles) and the
//! CLI. `main.rs` only calls [`cli::run`].

pub mod cli;
pub mod config;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use ordo_api::{ApiConfig, AppState};
use ordo_commands::db::{self, PoolSettings};
use ordo_projections::{Projection, Runner, RunnerConfig};
use ordo_workers::notification::Mailer;
use ordo_workers::{ProcessManager, Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, ServeRole};

/// Every module's migrations, one sequence (each file names the schema it belongs to).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Create the database if it is missing, then apply pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<PgPool> {
    db::ensure_database(&config.database_url)
        .await
        .context("cannot reach PostgreSQL to create the database")?;
    let pool = db::pool(
        &config.database_url,
        &PoolSettings {
            max_connections: config.db_max_connections,
            acquire_timeout: Duration::from_secs(config.db_acquire_timeout_secs),
        },
    )?;
    MIGRATOR.run(&pool).await.context("migrations failed")?;
    Ok(pool)
}

/// Ordo's roles in one process: the HTTP API bound to its address, and the projection
/// runners, ready to run.
pub struct Application {
    /// The HTTP address: the whole API with the API role, else the operations routes.
    listener: Option<TcpListener>,
    state: AppState,
    roles: Vec<ServeRole>,
    runner: RunnerConfig,
    relay: RelayConfig,
    /// The notification worker's SMTP client, when `smtp_url` is set.
    mailer: Option<Mailer>,
    /// Which workers the `workers` role runs.
    workers: Vec<Worker>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = migrate(config).await?;
        Self::with_pool(config, pool).await
    }

    /// Build on an existing, migrated pool (tests point it through a proxy).
    pub async fn with_pool(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        // Every process listens: with the API role for the whole API, without it for the
        // operations routes (/healthz, /readyz, /metrics) so each service can be scraped.
        // Only the API role insists; a worker started beside a server on the same address
        // runs without its operations routes rather than not at all.
        let listener = match TcpListener::bind(config.http_addr).await {
            Ok(listener) => Some(listener),
            Err(e) if config.roles.contains(&ServeRole::Api) => {
                return Err(e).with_context(|| format!("cannot listen on {}", config.http_addr))
            }
            Err(e) => {
                tracing::warn!(addr = %config.http_addr, error = %e, "cannot listen; no /metrics or /readyz in this process");
                None
            }
        };
        ordo_api::metrics::install();
        let api = ApiConfig {
            body_limit: config.body_limit,
            crash_after_commit: config.crash_after_commit,
            read_wait: Duration::from_secs(config.read_wait_secs),
            workers: WorkerConfig {
                stream: config.nats_stream.clone(),
                subject_prefix: config.nats_subject_prefix.clone(),
                ..WorkerConfig::new(config.nats_url.clone())
            },
        };
        let mailer = config
            .smtp_url
            .as_deref()
            .map(|url| Mailer::new(url, &config.smtp_from))
            .transpose()
            .map_err(|e| anyhow::anyhow!("smtp: {e}"))?;
        let workers = config
            .workers
            .iter()
            .map(|name| {
                Worker::from_name(name).with_context(|| {
                    format!("no worker is called `{name}` (notification, analytics, integration)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            mailer,
            workers,
            listener,
            state: AppState::new(pool, api),
            roles: config.roles.clone(),
            runner: RunnerConfig::default(),
            relay: RelayConfig {
                stream: config.nats_stream.clone(),
                subject_prefix: config.nats_subject_prefix.clone(),
                ..RelayConfig::new(config.nats_url.clone())
            },
        })
    }

    /// Where this process listens (the API, or only the operations routes without the API
    /// role); an error when it could not bind its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "this process has no HTTP listener",
            )),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Runner settings (tests make them faster).
    pub fn with_runner_config(mut self, runner: RunnerConfig) -> Self {
        self.runner = runner;
        self
    }

    /// Run the roles until `shutdown` resolves; then in-flight requests and batches finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if self.roles.contains(&ServeRole::Projector) {
            for projection in Projection::ALL {
                let runner = Runner::new(self.state.pool.clone(), projection, self.runner.clone());
                tasks.push(tokio::spawn(runner.run(stopped.clone())));
            }
        }
        if self.roles.contains(&ServeRole::ProcessManager) {
            let pm = ProcessManager::new(self.state.pool.clone(), self.state.commands.clone());
            tasks.push(tokio::spawn(pm.run(stopped.clone())));
        }
        if self.roles.contains(&ServeRole::Relay) {
            let (pool, config, stopped) =
                (self.state.pool.clone(), self.relay.clone(), stopped.clone());
            tasks.push(tokio::spawn(async move {
                match Relay::connect(pool, config).await {
                    Ok(relay) => relay.run(stopped).await,
                    Err(e) => tracing::error!(error = %e, "relay cannot start"),
                }
            }));
        }
        if self.roles.contains(&ServeRole::Workers) {
            for worker in self.workers.iter().copied() {
                let mailer = (worker == Worker::Notification)
                    .then(|| self.mailer.clone())
                    .flatten();
                tasks.push(tokio::spawn(run_worker(
                    self.state.pool.clone(),
                    worker,
                    self.relay.clone(),
                    stopped.clone(),
                    mailer,
                )));
            }
        }
        let purge = tokio::spawn(purge_idempotency_keys(self.state.pool.clone()));
        let served = match self.listener {
            Some(listener) => {
                let app = if self.roles.contains(&ServeRole::Api) {
                    ordo_api::router(self.state)
                } else {
                    ordo_api::ops_router(self.state)
                };
                // Without TCP_NODELAY a response written in two parts waits for the
                // client's delayed ACK: ~40 ms added to every request.
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                shutdown.await;
                Ok(())
            }
        };
        purge.abort();
        let _ = stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
        served
    }
}

/// Run a worker, connecting again (the stream may not exist before the relay made it)
/// until it is up or the process stops.
async fn run_worker(
    pool: PgPool,
    worker: Worker,
    relay: RelayConfig,
    mut stopped: watch::Receiver<bool>,
    mailer: Option<Mailer>,
) {
    let config = WorkerConfig {
        stream: relay.stream,
        subject_prefix: relay.subject_prefix,
        ..WorkerConfig::new(relay.nats_url)
    };
    while !*stopped.borrow() {
        match WorkerRunner::connect(pool.clone(), worker, config.clone()).await {
            Ok(runner) => return runner.with_mailer(mailer).run(stopped).await,
            Err(e) => tracing::warn!(worker = worker.name(), error = %e, "worker cannot start yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Forget idempotency keys past their retention, every ten minutes.
async fn purge_idempotency_keys(pool: PgPool) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match ordo_commands::idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
