//! Ordo's composition root: configuration, start-up (database, migrations, roles) and the
//! CLI. `main.rs` only calls [`cli::run`].

pub mod cli;
pub mod config;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use ordo_api::{ApiConfig, AppState, NatsProbe, RateLimit};
use ordo_commands::db::{self, PoolSettings};
use ordo_projections::{Projection, Rebuilder, Runner, RunnerConfig};
use ordo_runtime::process::{ProcessRoleState, ProcessRoles};
use ordo_workers::integration::{self, DeliveryConfig, DeliveryPool, Integration};
use ordo_workers::jetstream::Policy;
use ordo_workers::notification::sender::{MailConfig, MailSender};
use ordo_workers::notification::{Mailer, Notification};
use ordo_workers::tls::TrustRoots;
use ordo_workers::{ProcessManager, Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

pub use config::{Config, ProcessRole, SmtpUrl};

/// Every module's migrations, one sequence (each file names the schema it belongs to).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Create the database if it is missing, then apply pending migrations. PostgreSQL that
/// cannot be reached, or has no connection to spare ("too many clients"), is tried again
/// with exponential backoff for up to `db_start_timeout_secs`, so processes started
/// together (or before the database) wait instead of exiting.
pub async fn migrate(config: &Config) -> anyhow::Result<PgPool> {
    let pool = db::pool(
        &config.database_url,
        &PoolSettings {
            max_connections: config.db_max_connections,
            acquire_timeout: Duration::from_secs(config.db_acquire_timeout_secs),
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(config.db_start_timeout_secs);
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times(),
    );
    loop {
        let attempt = async {
            db::ensure_database(&config.database_url)
                .await
                .context("cannot reach PostgreSQL to create the database")?;
            MIGRATOR.run(&pool).await.context("migrations failed")
        };
        match attempt.await {
            Ok(()) => return Ok(pool),
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "PostgreSQL not available yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a start-up failure may pass: the server unreachable, or out of connections.
/// A bad URL or a failed migration will not.
fn retryable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => true,
            // 53300 too_many_connections, 57P03 cannot_connect_now (starting up).
            Some(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("53300" | "57P03"))
            }
            Some(sqlx::Error::Migrate(m)) => matches!(
                m.as_ref(),
                sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_))
            ),
            _ => false,
        }
    })
}

/// Ordo's roles in one process: the HTTP API bound to its address, and the projection
/// runners, ready to run.
pub struct Application {
    /// The HTTP address: the whole API with the API role, else the operations routes.
    listener: Option<TcpListener>,
    state: AppState,
    roles: Vec<ProcessRole>,
    runner: RunnerConfig,
    relay: RelayConfig,
    /// The JetStream settings the `workers` role runs with.
    worker_settings: WorkerConfig,
    /// The notification worker's SMTP client, when `smtp_url` is set.
    mailer: Option<Mailer>,
    /// The integration worker's webhook client (trusting `tls_ca_file` too).
    webhooks: reqwest::Client,
    /// Which workers the `workers` role runs.
    workers: Vec<Worker>,
    /// The webhook delivery pool's settings.
    deliveries: DeliveryConfig,
    /// E-mails sent at once.
    smtp_concurrency: usize,
    /// How long a shutdown may take before the process stops waiting.
    shutdown_timeout: Duration,
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
            Err(e) if config.roles.contains(&ProcessRole::Api) => {
                return Err(e).with_context(|| format!("cannot listen on {}", config.http_addr))
            }
            Err(e) => {
                tracing::warn!(addr = %config.http_addr, error = %e, "cannot listen; no /metrics or /readyz in this process");
                None
            }
        };
        ordo_runtime::metrics::install();
        let api = ApiConfig {
            body_limit: config.body_limit,
            crash_after_commit: config.crash_after_commit,
            read_wait: Duration::from_secs(config.read_wait_secs),
            workers: config.workers(),
            rate_limit: RateLimit::new(config.rate_limit, config.rate_limit_window_secs),
            console_secure_cookie: config.console_secure_cookie,
        };
        let roots = config
            .tls_ca_file
            .as_deref()
            .map(TrustRoots::from_pem_file)
            .transpose()
            .map_err(|e| anyhow::anyhow!("ORDO_TLS_CA_FILE: {e}"))?;
        let mailer = config
            .smtp_url
            .as_ref()
            .map(|url| Mailer::with_roots(url.expose(), &config.smtp_from, roots.as_ref()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("smtp: {e}"))?;
        let webhooks = integration::client_with(roots.as_ref())
            .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
        let workers = config
            .worker_names
            .iter()
            .map(|name| {
                Worker::from_name(name).with_context(|| {
                    format!("no worker is called `{name}` (notification, analytics, integration)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if config.roles.contains(&ProcessRole::Api)
            || config.roles.contains(&ProcessRole::Projector)
        {
            // The read models' tables, before the first read: a read must not find them
            // missing (a 500) because no runner has started yet.
            for projection in Projection::ALL {
                if let Err(e) = ordo_projections::runner::prepare(&pool, projection).await {
                    tracing::warn!(projection = projection.name(), error = %e, "cannot prepare read model tables yet");
                }
            }
        }
        let mut state = AppState::new(pool, api);
        let needs_nats = config.roles.contains(&ProcessRole::Relay)
            || config.roles.contains(&ProcessRole::Workers);
        match NatsProbe::start(&config.nats_url, needs_nats).await {
            Ok(probe) => state.readiness.nats = Some(probe),
            Err(e) if needs_nats => return Err(e).context("bad NATS_URL"),
            Err(e) => tracing::warn!(error = %e, "NATS readiness probe off"),
        }
        Ok(Self {
            mailer,
            webhooks,
            workers,
            smtp_concurrency: config.smtp_concurrency,
            deliveries: DeliveryConfig {
                timeout: Duration::from_secs(config.webhook_timeout_secs),
                concurrency: config.webhook_concurrency,
                disable_after: Duration::from_secs(config.webhook_disable_after_secs),
                ..DeliveryConfig::default()
            },
            listener,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            state,
            roles: config.roles.clone(),
            runner: RunnerConfig::default(),
            relay: config.relay(),
            worker_settings: config.workers(),
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

    /// Role states and the NATS probe `/readyz` reports.
    pub fn roles(&self) -> &ProcessRoles {
        &self.state.readiness.roles
    }

    /// Run the roles until `shutdown` resolves. Then, in order: the API stops accepting
    /// connections and finishes its in-flight requests; the projectors, relay, process
    /// manager and workers finish their current batch and checkpoint; and this returns.
    /// All of that within the shutdown timeout, after which it returns anyway (whatever was
    /// cut short was not checkpointed, so it runs again on the next start).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let roles = self.state.readiness.roles.clone();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if self.roles.contains(&ProcessRole::Projector) {
            for projection in Projection::ALL {
                let runner = Runner::new(self.state.pool.clone(), projection, self.runner.clone());
                let name = format!("projector.{}", projection.name());
                roles.set(&name, ProcessRoleState::Running);
                tasks.push(supervise(
                    &roles,
                    name,
                    &stopped,
                    runner.run(stopped.clone()),
                ));
            }
            // Rebuilds (requested, or of read models an older version built), in bulk, all
            // read models from one read of the log.
            let rebuilder = Rebuilder::new(self.state.pool.clone(), self.runner.clone());
            roles.set("projector.rebuilds", ProcessRoleState::Running);
            tasks.push(supervise(
                &roles,
                "projector.rebuilds".into(),
                &stopped,
                rebuilder.run(stopped.clone()),
            ));
        }
        if self.roles.contains(&ProcessRole::ProcessManager) {
            let pm = ProcessManager::new(self.state.pool.clone(), self.state.commands.clone());
            roles.set("process_manager", ProcessRoleState::Running);
            tasks.push(supervise(
                &roles,
                "process_manager".into(),
                &stopped,
                pm.run(stopped.clone()),
            ));
        }
        if self.roles.contains(&ProcessRole::Relay) {
            roles.set("relay", ProcessRoleState::Starting);
            let relay = run_relay(
                self.state.pool.clone(),
                self.relay.clone(),
                stopped.clone(),
                roles.clone(),
            );
            tasks.push(supervise(&roles, "relay".into(), &stopped, relay));
        }
        if self.roles.contains(&ProcessRole::Workers) {
            for worker in self.workers.iter().copied() {
                let policy: Arc<dyn Policy> = match worker {
                    Worker::Notification => Notification::new(self.mailer.is_some()).into(),
                    Worker::Integration => Integration.into(),
                    Worker::Analytics => worker.policy(),
                };
                let name = format!("worker.{}", worker.name());
                roles.set(&name, ProcessRoleState::Starting);
                let run = run_worker(
                    self.state.pool.clone(),
                    policy,
                    self.worker_settings.clone(),
                    stopped.clone(),
                    (roles.clone(), name.clone()),
                );
                tasks.push(supervise(&roles, name, &stopped, run));
            }
            if self.workers.contains(&Worker::Integration) {
                // The integration worker only writes the outbox; this pool sends it.
                let name = "deliveries.webhooks".to_owned();
                roles.set(&name, ProcessRoleState::Running);
                let pool = DeliveryPool::new(
                    self.state.pool.clone(),
                    self.webhooks.clone(),
                    self.deliveries.clone(),
                );
                tasks.push(supervise(&roles, name, &stopped, pool.run(stopped.clone())));
            }
            if let (true, Some(mailer)) = (
                self.workers.contains(&Worker::Notification),
                self.mailer.clone(),
            ) {
                // The notification worker only records; this sender sends.
                let name = "deliveries.mail".to_owned();
                roles.set(&name, ProcessRoleState::Running);
                let sender = MailSender::new(
                    self.state.pool.clone(),
                    mailer,
                    MailConfig {
                        concurrency: self.smtp_concurrency,
                        ..MailConfig::default()
                    },
                );
                tasks.push(supervise(
                    &roles,
                    name,
                    &stopped,
                    sender.run(stopped.clone()),
                ));
            }
        }
        let purge = tokio::spawn(purge_idempotency_keys(self.state.pool.clone()));

        // The signal starts the clock: everything below must end by `deadline`.
        let (signalled, deadline) = watch::channel(None::<Instant>);
        let timeout = self.shutdown_timeout;
        let shutdown = {
            let roles = roles.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests and batches");
                roles.stopping();
                let _ = signalled.send(Some(Instant::now() + timeout));
            }
        };
        let served = match self.listener {
            Some(listener) => {
                let app = if self.roles.contains(&ProcessRole::Api) {
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
                roles.set("api", ProcessRoleState::Running);
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                let served = tokio::select! {
                    served = serve.into_future() => served,
                    () = deadline_passed(deadline.clone()) => {
                        tracing::warn!(?timeout, "in-flight requests did not finish in time; dropping them");
                        Ok(())
                    }
                };
                roles.set("api", ProcessRoleState::Stopped);
                served
            }
            None => {
                shutdown.await;
                Ok(())
            }
        };
        purge.abort();
        roles.stopping();
        let _ = stop.send(true);
        let deadline = (*deadline.borrow()).unwrap_or_else(|| Instant::now() + timeout);
        let aborts: Vec<AbortHandle> = tasks.iter().map(|(_, role)| role.clone()).collect();
        let joined = tokio::time::timeout_at(deadline, async {
            for (supervisor, _) in tasks {
                let _ = supervisor.await;
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                ?timeout,
                "roles did not finish their batch in time; stopping them"
            );
            for role in aborts {
                role.abort();
            }
        }
        tracing::info!("stopped");
        served
    }
}

/// Resolves when the shutdown deadline, once set, has passed.
async fn deadline_passed(mut deadline: watch::Receiver<Option<Instant>>) {
    let at = match deadline.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Spawn a role's task and record how it ends: `stopped` when shutdown asked for it,
/// `failed` when it panicked or returned on its own. Returns the supervisor to await and
/// the role task to abort if it overstays the shutdown.
fn supervise(
    roles: &ProcessRoles,
    name: String,
    stopped: &watch::Receiver<bool>,
    role: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, AbortHandle) {
    let task = tokio::spawn(role);
    let abort = task.abort_handle();
    let (roles, stopped) = (roles.clone(), stopped.clone());
    let supervisor = tokio::spawn(async move {
        let state = match task.await {
            Ok(()) if *stopped.borrow() => ProcessRoleState::Stopped,
            Ok(()) => {
                tracing::error!(role = %name, "role ended without being asked to");
                ProcessRoleState::Failed
            }
            Err(e) if e.is_cancelled() => ProcessRoleState::Stopped,
            Err(e) => {
                tracing::error!(role = %name, error = %e, "role panicked");
                ProcessRoleState::Failed
            }
        };
        roles.set(&name, state);
    });
    (supervisor, abort)
}

/// Run the relay, connecting again until NATS answers or the process stops.
async fn run_relay(
    pool: PgPool,
    config: RelayConfig,
    mut stopped: watch::Receiver<bool>,
    roles: ProcessRoles,
) {
    while !*stopped.borrow() {
        match Relay::connect(pool.clone(), config.clone()).await {
            Ok(relay) => {
                roles.set("relay", ProcessRoleState::Running);
                return relay.run(stopped).await;
            }
            Err(e) => tracing::warn!(error = %e, "relay cannot start yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Run a worker, connecting again (the stream may not exist before the relay made it)
/// until it is up or the process stops.
async fn run_worker(
    pool: PgPool,
    policy: Arc<dyn Policy>,
    config: WorkerConfig,
    mut stopped: watch::Receiver<bool>,
    (roles, name): (ProcessRoles, String),
) {
    while !*stopped.borrow() {
        match WorkerRunner::connect(pool.clone(), policy.clone(), config.clone()).await {
            Ok(runner) => {
                roles.set(&name, ProcessRoleState::Running);
                return runner.run(stopped).await;
            }
            Err(e) => tracing::warn!(worker = policy.name(), error = %e, "worker cannot start yet"),
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
}
