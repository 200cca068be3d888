//! Ordo's composition root: the CLI (`cli`), configuration (`config`), the database at
//! start-up (`database`), the process roles (`Application` here; `roles`, `supervise`) and
//! shutdown (`shutdown`). `main.rs` only calls [`cli::run`].

pub mod cli;
pub mod config;
mod database;
mod roles;
mod shutdown;
pub mod supervise;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ordo_api::{ApiConfig, AppState, RateLimit};
use ordo_projections::{Projection, Rebuilder, Runner, RunnerConfig, SharedFeed};
use ordo_runtime::process::{ProcessRoleState, ProcessRoles};
use ordo_runtime::readiness::{NatsProbe, Readiness};
use ordo_workers::integration::{self, DeliveryConfig, DeliveryPool, Integration};
use ordo_workers::jetstream::Policy;
use ordo_workers::notification::sender::{MailConfig, MailSender};
use ordo_workers::notification::{Mailer, Notification};
use ordo_workers::retention::Retention;
use ordo_workers::retry::RetrySchedule;
use ordo_workers::tls::TrustRoots;
use ordo_workers::{ProcessManager, RelayConfig, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::supervise::supervise;
use tokio::time::Instant;

pub use config::{Config, DatabaseUrl, ProcessRole, Secret, SmtpUrl};
pub use database::{migrate, MIGRATOR};
pub use shutdown::shutdown_signal;

use crate::roles::{purge_idempotency_keys, run_relay, run_worker};
use crate::shutdown::deadline_passed;

/// Ordo's roles in one process: the HTTP API bound to its address, and the projection
/// runners, ready to run.
pub struct Application {
    /// The HTTP address: the whole API with the API role, else the operations routes.
    listener: Option<TcpListener>,
    /// `/metrics` on its own address (`ORDO_METRICS_ADDR`), when set.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    roles: Vec<ProcessRole>,
    runner: RunnerConfig,
    relay: RelayConfig,
    /// The JetStream settings the `workers` role runs with.
    worker_settings: WorkerConfig,
    /// The notification worker's SMTP client, when `smtp_url` is set.
    mailer: Option<Mailer>,
    /// The integration worker's webhook client (trusting `tls_ca_file` too).
    webhooks: ordo_workers::egress::WebhookClient,
    /// Which workers the `workers` role runs.
    workers: Vec<Worker>,
    /// The webhook delivery pool's settings.
    deliveries: DeliveryConfig,
    /// E-mails sent at once.
    smtp_concurrency: usize,
    /// How long delivery history is kept (`None`: forever).
    retention: Option<Retention>,
    /// How long a shutdown may take before the process stops waiting.
    shutdown_timeout: Duration,
    /// The HTTP server's header-read timeout and connection limit.
    server_limits: ordo_api::server::ServerLimits,
    /// How often the head is signed (`None`: on demand only).
    checkpoint_every: Option<Duration>,
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
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (ORDO_METRICS_ADDR)"))?,
            ),
            None => None,
        };
        ordo_runtime::metrics::install();
        let master_keys = config.master_keys()?;
        if master_keys.is_none() {
            tracing::warn!(
                "no master key (ORDO_MASTER_KEY or ORDO_MASTER_KEY_FILE): encryption of new personal data is off; customers' e-mail, name, phone, addresses and notes are stored in clear"
            );
        }
        let audit = config.audit_keys()?;
        if audit.signer.is_none() {
            tracing::warn!(
                "ORDO_AUDIT_SIGNING_KEY is not set: checkpoints of the hash chain are not signed"
            );
        }
        let api = ApiConfig {
            master_keys,
            audit,
            metrics_elsewhere: metrics_listener.is_some(),
            body_limit: config.body_limit,
            #[cfg(debug_assertions)]
            crash_after_commit: config.crash_after_commit,
            #[cfg(not(debug_assertions))]
            crash_after_commit: false,
            read_wait: Duration::from_secs(config.read_wait_secs),
            workers: config.workers(),
            rate_limit: RateLimit::new(config.rate_limit, config.rate_limit_window_secs),
            webhook_allow_private: config.webhook_allow_private,
            anonymous_rate_limit: RateLimit::new(
                config.anonymous_rate_limit,
                config.rate_limit_window_secs,
            ),
            limits: ordo_api::limits::RequestLimits {
                timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
                max_in_flight: config.max_in_flight.max(1),
            },
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
        let webhooks = integration::client_with(roots.as_ref(), config.webhook_allow_private)
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
        let mut readiness = Readiness::default();
        let needs_nats = config.roles.contains(&ProcessRole::Relay)
            || config.roles.contains(&ProcessRole::Workers);
        match NatsProbe::start(&config.nats_url, needs_nats).await {
            Ok(probe) => readiness.nats = Some(probe),
            Err(e) if needs_nats => return Err(e).context("bad NATS_URL"),
            Err(e) => tracing::warn!(error = %e, "NATS readiness probe off"),
        }
        let state = AppState::new(pool, api, readiness);
        Ok(Self {
            mailer,
            webhooks,
            workers,
            smtp_concurrency: config.smtp_concurrency,
            retention: (config.delivery_retention_days > 0)
                .then(|| Retention::days(config.delivery_retention_days)),
            deliveries: DeliveryConfig {
                timeout: Duration::from_secs(config.webhook_timeout_secs),
                concurrency: config.webhook_concurrency,
                per_endpoint: config.webhook_endpoint_concurrency.max(1),
                disable_after: Duration::from_secs(config.webhook_disable_after_secs),
                schedule: RetrySchedule {
                    first: Duration::from_secs(config.webhook_retry_first_secs.max(1)),
                    max_delay: Duration::from_secs(config.webhook_retry_max_secs.max(1)),
                    attempts: config.webhook_retry_attempts.max(1),
                    ..RetrySchedule::default()
                },
                ..DeliveryConfig::default()
            },
            listener,
            metrics_listener,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            server_limits: ordo_api::server::ServerLimits {
                header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
                max_connections: config.http_max_connections.max(1),
            },
            checkpoint_every: (config.audit_checkpoint_secs > 0)
                .then(|| Duration::from_secs(config.audit_checkpoint_secs)),
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

    /// Where `/metrics` listens when it has an address of its own (`ORDO_METRICS_ADDR`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
            // The three runners read each batch of the feed once between them.
            let shared = SharedFeed::new(&self.state.pool, self.state.commands.keys().clone());
            for projection in Projection::ALL {
                let (pool, config, stop, keys, shared) = (
                    self.state.pool.clone(),
                    self.runner.clone(),
                    stopped.clone(),
                    self.state.commands.keys().clone(),
                    shared.clone(),
                );
                let name = format!("projector.{}", projection.name());
                tasks.push(supervise(
                    &roles,
                    name,
                    &stopped,
                    ProcessRoleState::Running,
                    move || {
                        Runner::new(pool.clone(), projection, config.clone())
                            .with_keys(keys.clone())
                            .with_shared_feed(shared.clone())
                            .run(stop.clone())
                    },
                ));
            }
            // Rebuilds (requested, or of read models an older version built), in bulk, all
            // read models from one read of the log.
            let (pool, config, stop, keys) = (
                self.state.pool.clone(),
                self.runner.clone(),
                stopped.clone(),
                self.state.commands.keys().clone(),
            );
            tasks.push(supervise(
                &roles,
                "projector.rebuilds".into(),
                &stopped,
                ProcessRoleState::Running,
                move || {
                    Rebuilder::new(pool.clone(), config.clone())
                        .with_keys(keys.clone())
                        .run(stop.clone())
                },
            ));
        }
        if self.roles.contains(&ProcessRole::ProcessManager) {
            let (pool, commands, stop) = (
                self.state.pool.clone(),
                self.state.commands.clone(),
                stopped.clone(),
            );
            tasks.push(supervise(
                &roles,
                "process_manager".into(),
                &stopped,
                ProcessRoleState::Running,
                move || ProcessManager::new(pool.clone(), commands.clone()).run(stop.clone()),
            ));
        }
        if self.roles.contains(&ProcessRole::Relay) {
            let (pool, config, stop, states) = (
                self.state.pool.clone(),
                self.relay.clone(),
                stopped.clone(),
                roles.clone(),
            );
            tasks.push(supervise(
                &roles,
                "relay".into(),
                &stopped,
                ProcessRoleState::Starting,
                move || run_relay(pool.clone(), config.clone(), stop.clone(), states.clone()),
            ));
        }
        if self.roles.contains(&ProcessRole::Workers) {
            for worker in self.workers.iter().copied() {
                let policy: Arc<dyn Policy> = match worker {
                    Worker::Notification => Notification::new(self.mailer.is_some())
                        .with_keys(self.state.commands.keys().clone())
                        .into(),
                    Worker::Integration => {
                        Integration::with_keys(self.state.commands.keys().clone()).into()
                    }
                    Worker::Analytics => worker.policy(),
                };
                let name = format!("worker.{}", worker.name());
                let (pool, config, stop, states, role) = (
                    self.state.pool.clone(),
                    self.worker_settings.clone(),
                    stopped.clone(),
                    roles.clone(),
                    name.clone(),
                );
                tasks.push(supervise(
                    &roles,
                    name,
                    &stopped,
                    ProcessRoleState::Starting,
                    move || {
                        run_worker(
                            pool.clone(),
                            policy.clone(),
                            config.clone(),
                            stop.clone(),
                            (states.clone(), role.clone()),
                        )
                    },
                ));
            }
            if self.workers.contains(&Worker::Integration) {
                // The integration worker only writes the outbox; this pool sends it.
                let (pool, client, config, stop) = (
                    self.state.pool.clone(),
                    self.webhooks.clone(),
                    self.deliveries.clone(),
                    stopped.clone(),
                );
                tasks.push(supervise(
                    &roles,
                    "deliveries.webhooks".into(),
                    &stopped,
                    ProcessRoleState::Running,
                    move || {
                        DeliveryPool::new(pool.clone(), client.clone(), config.clone())
                            .run(stop.clone())
                    },
                ));
            }
            if let (true, Some(mailer)) = (
                self.workers.contains(&Worker::Notification),
                self.mailer.clone(),
            ) {
                // The notification worker only records; this sender sends.
                let (keys, concurrency, stop) = (
                    self.state.commands.keys().clone(),
                    self.smtp_concurrency,
                    stopped.clone(),
                );
                tasks.push(supervise(
                    &roles,
                    "deliveries.mail".into(),
                    &stopped,
                    ProcessRoleState::Running,
                    move || {
                        let config = MailConfig {
                            concurrency,
                            ..MailConfig::default()
                        };
                        MailSender::new(keys.clone(), mailer.clone(), config).run(stop.clone())
                    },
                ));
            }
        }
        let purge = tokio::spawn(purge_idempotency_keys(self.state.pool.clone()));
        // Delivery history past its retention, where the deliveries are sent.
        let retention = self
            .retention
            .filter(|_| self.roles.contains(&ProcessRole::Workers))
            .map(|r| {
                tokio::spawn(ordo_workers::retention::run(
                    self.state.pool.clone(),
                    r,
                    stopped.clone(),
                ))
            });
        // Signed checkpoints, in every process holding the key; they take turns on a lock.
        let checkpoints = match (&self.state.config.audit.signer, self.checkpoint_every) {
            (Some(signer), Some(every)) => Some(tokio::spawn(ordo_commands::checkpoint::run(
                self.state.pool.clone(),
                signer.clone(),
                every,
                stopped.clone(),
            ))),
            _ => None,
        };
        let metrics = self.metrics_listener.map(|listener| {
            let app = ordo_api::metrics::metrics_router(self.state.clone());
            let mut stopped = stopped.clone();
            tokio::spawn(ordo_api::server::serve(
                listener,
                app,
                self.server_limits,
                async move {
                    let _ = stopped.changed().await;
                },
            ))
        });

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
                // Without the `api` role the listener serves only the operations routes
                // (health, readiness, metrics), and readiness does not list an `api` role.
                let api = self.roles.contains(&ProcessRole::Api);
                let app = if api {
                    ordo_api::router(self.state)
                } else {
                    ordo_api::ops_router(self.state)
                };
                if api {
                    roles.set("api", ProcessRoleState::Running);
                }
                let serve = ordo_api::server::serve(listener, app, self.server_limits, shutdown);
                let served = tokio::select! {
                    () = serve => Ok(()),
                    () = deadline_passed(deadline.clone()) => {
                        tracing::warn!(?timeout, "in-flight requests did not finish in time; dropping them");
                        Ok(())
                    }
                };
                if api {
                    roles.set("api", ProcessRoleState::Stopped);
                }
                served
            }
            None => {
                shutdown.await;
                Ok(())
            }
        };
        purge.abort();
        if let Some(retention) = retention {
            retention.abort();
        }
        if let Some(checkpoints) = checkpoints {
            checkpoints.abort();
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
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
