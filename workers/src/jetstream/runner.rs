//! The runner: one worker's durable pull consumer (and its consumer of max-deliveries
//! advisories), the pull loop, and a step for tests and benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream, Message};
use futures::{FutureExt, StreamExt};
use ordo_commands::feed::Cadence;
use sqlx::PgPool;
use tokio::sync::watch;

use super::config::WorkerConfig;
use super::policy::Policy;
use crate::nats::ensure_stream;

/// The most messages pulled as one batch (a batch that lingered for more may end up to
/// twice this, with the messages that had arrived meanwhile).
const BATCH: usize = 500;

/// While messages keep coming (the last batch was handled less than this ago), a batch that
/// is not full waits for more before it is handled: as long as the feed's background readers
/// linger for the flow the worker sees ([`Cadence`]).
const FLOWING: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub(super) fn nats(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Nats(e.to_string())
}

/// One worker on JetStream: its policy, its consumers, its pool.
pub struct Runner {
    pub(super) pool: PgPool,
    pub(super) policy: Arc<dyn Policy>,
    pub(super) config: WorkerConfig,
    pub(super) js: jetstream::Context,
    pub(super) events: stream::Stream,
    consumer: Consumer<pull::Config>,
    /// The worker's durable consumer of its own max-deliveries advisories.
    advisories: Consumer<pull::Config>,
}

impl Runner {
    /// Connect, and create or update the worker's durable consumer, the dead-letter stream,
    /// the advisory stream and the worker's consumer of its advisories. The server's answer
    /// is checked: nats-server 2.9 ignores fields it does not know, which must not silently
    /// widen a consumer's filter.
    pub async fn connect(
        pool: PgPool,
        policy: impl Into<Arc<dyn Policy>>,
        config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let policy = policy.into();
        let name = policy.name();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .map_err(nats)?;
        let js = jetstream::new(client);
        // Created or updated: a changed setting (say `max_deliver`) takes effect on start.
        ensure_stream(
            &js,
            stream::Config {
                name: config.dlq_stream.clone(),
                subjects: vec![format!("{}.>", config.dlq_prefix)],
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .map_err(nats)?;
        let events = ensure_stream(
            &js,
            crate::relay::events_stream(&config.stream, &config.subject_prefix),
        )
        .await
        .map_err(nats)?;
        let filter = format!("{}.>", config.subject_prefix);
        // Where the consumer starts cannot be updated, and a replay set it: keep it.
        let deliver_policy = match events.get_consumer::<pull::Config>(name).await {
            Ok(existing) => existing.cached_info().config.deliver_policy,
            Err(_) => DeliverPolicy::All,
        };
        let mut consumer: Consumer<pull::Config> = events
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let info = consumer.info().await.map_err(nats)?;
        if info.config.filter_subject != filter
            || info.config.ack_wait != config.ack_wait
            || info.config.max_deliver != config.max_deliver
        {
            return Err(WorkerError::Nats(format!(
                "consumer {name} is `{}` with ack wait {:?} and {} deliveries at most, not `{filter}`, {:?} and {}",
                info.config.filter_subject,
                info.config.ack_wait,
                info.config.max_deliver,
                config.ack_wait,
                config.max_deliver
            )));
        }
        ensure_stream(&js, config.advisory_stream_config())
            .await
            .map_err(nats)?;
        let advisory_filter = config.max_deliveries_subject(name);
        let mut advisories: Consumer<pull::Config> = js
            .get_stream(config.advisory_stream())
            .await
            .map_err(nats)?
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: advisory_filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let info = advisories.info().await.map_err(nats)?;
        if info.config.filter_subject != advisory_filter {
            return Err(WorkerError::Nats(format!(
                "advisory consumer {name} filters `{}`, not `{advisory_filter}`",
                info.config.filter_subject
            )));
        }
        Ok(Self {
            pool,
            policy,
            config,
            js,
            events,
            consumer,
            advisories,
        })
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.policy.name()
    }

    /// Handle what is waiting (up to `max` messages, waiting at most `wait`); returns how
    /// many messages were settled.
    pub async fn step(&self, max: usize, wait: Duration) -> Result<usize, WorkerError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(nats)?;
        let mut messages = Vec::with_capacity(max);
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(nats)?);
        }
        self.handle_batch(&messages).await?;
        Ok(messages.len())
    }

    /// Handle messages until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            if let Err(e) = self.consume(&mut shutdown).await {
                tracing::warn!(worker = self.name(), error = %e, "worker failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Handle the consumer's messages as they arrive, each time with all that are already
    /// here as one batch, until `shutdown` turns true.
    ///
    /// A continuous pull (the client keeps a request open and renews it) rather than a
    /// fetch per step: a fetch ends on the server's "no more messages" status, and when
    /// nats-server 2.9 does not send one the client waits out the request plus five
    /// seconds, which stalled every message behind it.
    async fn consume(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), WorkerError> {
        let stream = self
            .consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .messages()
            .await
            .map_err(nats)?;
        let mut batches = stream.ready_chunks(BATCH);
        let mut last_batch: Option<Instant> = None;
        let mut cadence = Cadence::default();
        let mut advisories = self
            .advisories
            .stream()
            .max_messages_per_batch(10)
            .messages()
            .await
            .map_err(nats)?;
        // Ends on the value, not on a change: a change seen while a batch lingered (below) is
        // not seen again by the select's `changed()`, which would then wait for ever.
        while !*shutdown.borrow() {
            let batch = tokio::select! {
                batch = batches.next() => batch,
                advisory = advisories.next() => {
                    match advisory {
                        Some(Ok(advisory)) => self.settle_advisory(&advisory).await?,
                        Some(Err(e)) => return Err(nats(e)),
                        None => return Err(WorkerError::Nats("the advisory stream ended".into())),
                    }
                    continue;
                }
                _ = shutdown.changed() => break,
            };
            let Some(mut batch) = batch else {
                return Err(WorkerError::Nats("the message stream ended".into()));
            };
            // Under a steady flow (the last batch was handled a moment ago) a batch that is
            // not full lingers for more, so that one transaction settles many messages; after
            // a quiet spell the first message is handled at once.
            let flowing = last_batch.is_some_and(|at| at.elapsed() < FLOWING);
            // It goes as soon as it is full: a backlog is not held back.
            if flowing && batch.len() < BATCH {
                let deadline = tokio::time::Instant::now() + cadence.linger();
                while batch.len() < BATCH {
                    tokio::select! {
                        more = batches.next() => match more {
                            Some(more) => batch.extend(more),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = shutdown.changed() => break,
                    }
                }
            }
            let mut messages: Vec<Message> = Vec::with_capacity(batch.len());
            let mut failure = None;
            for message in batch {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => failure = Some(nats(e)),
                }
            }
            self.handle_batch(&messages).await?;
            cadence.after(messages.len());
            last_batch = Some(Instant::now());
            if let Some(e) = failure {
                return Err(e);
            }
        }
        // Messages already received go back at once rather than after the ack wait.
        while let Some(Some(batch)) = batches.next().now_or_never() {
            for message in batch.into_iter().flatten() {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        Ok(())
    }
}
