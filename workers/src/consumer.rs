//! Workers: durable JetStream pull consumers with explicit acks, bounded redelivery with
//! backoff, an idempotency record per worker, and a dead-letter path.
//!
//! A message is handled in one PostgreSQL transaction that also inserts its event id into
//! the worker's `processed` table: a redelivery of a handled message finds the id and is only
//! acknowledged. A failure is negatively acknowledged with the next backoff delay; on the last
//! allowed delivery the message is published to the dead-letter stream (`ORDO_DLQ`, subject
//! `ordo.dlq.<worker>`), recorded in `workers.dead_letters`, and terminated. The worker
//! publishes that dead letter itself (nats-server 2.9 drops a termination's reason).
//!
//! A message the worker never settles (it crashed, or the handler outlived `ack_wait`) is
//! given up on by JetStream after `max_deliver` deliveries with nothing but a
//! fire-and-forget max-deliveries advisory. So the advisories are captured too, in
//! `<events stream>_ADVISORIES` (max-deliveries and terminated ones), and each worker
//! consumes its own max-deliveries advisories (a durable consumer named after it, filtered
//! on its name) beside its messages: it reads the message back from the events stream by
//! sequence and dead-letters it the same way, unless it handled the event after all or
//! already has a dead letter for it (both paths check under one lock, so an event gets one);
//! the advisory is acked once the dead letter is recorded.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream, Message};
use async_nats::HeaderMap;
use futures::{FutureExt, StreamExt};
use ordo_commands::telemetry;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use crate::analytics;
use crate::egress::WebhookClient;
use crate::integration;
use crate::notification::{self, Mailer};

/// The workers (DESIGN.md §6). A closed set; each has its own schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Analytics,
    Integration,
    Notification,
}

impl Worker {
    pub const ALL: [Worker; 3] = [Worker::Notification, Worker::Analytics, Worker::Integration];

    /// Whether an operator may ask for its effects again (`replay --reprocess`): e-mails
    /// and webhooks can be sent twice on purpose; analytics' sums cannot be counted twice.
    pub fn effects_can_repeat(self) -> bool {
        matches!(self, Self::Notification | Self::Integration)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Analytics => "analytics",
            Self::Integration => "integration",
            Self::Notification => "notification",
        }
    }

    pub(crate) fn processed_table(self) -> &'static str {
        match self {
            Self::Analytics => "analytics.processed",
            Self::Integration => "integration.processed",
            Self::Notification => "notification.processed",
        }
    }

    /// `pool` is for effects that must outlive a rolled-back `tx` (the integration worker's
    /// delivery attempts).
    async fn handle(
        self,
        pool: &PgPool,
        tx: &mut PgConnection,
        event: &Delivered,
        outbound: &Outbound,
    ) -> Result<(), HandleError> {
        match self {
            Self::Analytics => analytics::handle(tx, event).await,
            Self::Integration => integration::handle(pool, &outbound.webhooks, event).await,
            Self::Notification => notification::handle(tx, event, outbound.mailer.as_ref()).await,
        }
    }
}

/// The most messages handled as one batch.
const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub dlq_stream: String,
    pub dlq_prefix: String,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: i64,
    /// Delay before each redelivery (the last one repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivered message may stay unsettled before JetStream delivers it again
    /// (or, after `max_deliver` deliveries, gives up and emits a max-deliveries advisory).
    pub ack_wait: Duration,
}

impl WorkerConfig {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream: "ORDO_EVENTS".into(),
            subject_prefix: "ordo.events".into(),
            dlq_stream: "ORDO_DLQ".into(),
            dlq_prefix: "ordo.dlq".into(),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(30),
        }
    }

    /// The stream that captures the events stream's dead-letter advisories:
    /// `<events stream>_ADVISORIES`.
    pub fn advisory_stream(&self) -> String {
        format!("{}_ADVISORIES", self.stream)
    }

    /// The subject of the advisory JetStream emits when `consumer` gave up on a message of
    /// the events stream after `max_deliver` deliveries.
    pub fn max_deliveries_subject(&self, consumer: &str) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{consumer}",
            self.stream
        )
    }

    fn advisory_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.advisory_stream(),
            subjects: vec![
                self.max_deliveries_subject("*"),
                format!(
                    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.*",
                    self.stream
                ),
            ],
            storage: stream::StorageType::File,
            max_age: ADVISORY_MAX_AGE,
            ..Default::default()
        }
    }
}

/// How long captured advisories are kept: longer than a worker is ever expected to be down.
const ADVISORY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What nats-server (2.9 and later) sends on
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` (type
/// `io.nats.jetstream.advisory.v1.max_deliver`), the fields used here.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MaxDeliveriesAdvisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: i64,
}

/// What handling a max-deliveries advisory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryOutcome {
    /// The message is now a dead letter.
    DeadLettered,
    /// Nothing to do: the worker handled the event after all, or it is a dead letter already.
    AlreadySettled,
    /// The advisory is not this worker's, does not parse, or its message is gone from the
    /// events stream: nothing can be dead-lettered.
    Ignored,
}

/// An event as a worker receives it, from the message's headers and body.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub position: i64,
    pub body: Value,
    /// The W3C trace context the event was recorded under (the `traceparent` header).
    pub traceparent: Option<String>,
}

impl Delivered {
    /// The span a handler runs in: a child of the request that recorded the event, so one
    /// trace runs from that request to this handler's effects.
    fn span(&self, worker: Worker) -> tracing::Span {
        let span = tracing::info_span!(
            "worker.handle",
            worker = worker.name(),
            event.id = %self.event_id,
            event.r#type = %self.event_type,
            event.position = self.position,
            attempt = tracing::field::Empty,
        );
        if let Some(traceparent) = &self.traceparent {
            telemetry::continue_trace(&span, traceparent);
        }
        span
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// This message can never be handled: straight to the dead letters.
    #[error("{0}")]
    Poison(String),
    /// Perhaps later (the database is away, say): redeliver after the backoff.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A side effect failed (a webhook answered non-2xx, say): redeliver after the backoff.
    #[error("{0}")]
    Retry(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn nats(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Nats(e.to_string())
}

/// The event id a message carries (`ce-id`).
fn event_id_in(headers: Option<&HeaderMap>) -> Option<Uuid> {
    headers
        .and_then(|h| h.get("ce-id"))
        .and_then(|v| Uuid::parse_str(v.as_str()).ok())
}

fn delivered(
    headers: Option<&HeaderMap>,
    subject: &str,
    prefix: &str,
    payload: &[u8],
) -> Result<Delivered, String> {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let event_id = event_id_in(headers).ok_or("no ce-id header with an event id")?;
    let event_type = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
        .ok_or("subject outside the event stream")?
        .to_owned();
    let body = serde_json::from_slice(payload).map_err(|e| format!("body is not JSON: {e}"))?;
    Ok(Delivered {
        event_id,
        event_type,
        aggregate_id: header("ce-subject").unwrap_or_default(),
        position: header("ordo-position")
            .and_then(|p| p.parse().ok())
            .unwrap_or_default(),
        body,
        traceparent: header("traceparent"),
    })
}

pub struct WorkerRunner {
    pool: PgPool,
    worker: Worker,
    config: WorkerConfig,
    js: jetstream::Context,
    events: stream::Stream,
    consumer: Consumer<pull::Config>,
    /// The worker's durable consumer of its own max-deliveries advisories.
    advisories: Consumer<pull::Config>,
    outbound: Outbound,
}

/// What the workers send through: the notification worker's SMTP client (none: it only
/// records) and the integration worker's webhook client.
struct Outbound {
    mailer: Option<Mailer>,
    webhooks: WebhookClient,
}

/// A message about to become a dead letter: a delivered one, or one JetStream gave up on
/// (read back from the events stream).
struct Letter<'a> {
    subject: &'a str,
    headers: Option<&'a HeaderMap>,
    payload: &'a [u8],
    stream_sequence: u64,
    attempts: i64,
}

impl Letter<'_> {
    fn event_id(&self) -> Option<Uuid> {
        event_id_in(self.headers)
    }
}

impl WorkerRunner {
    /// Connect, and create or update the worker's durable consumer, the dead-letter stream,
    /// the advisory stream and the worker's consumer of its advisories. The server's answer
    /// is checked: nats-server 2.9 ignores fields it does not know, which must not silently
    /// widen a consumer's filter.
    pub async fn connect(
        pool: PgPool,
        worker: Worker,
        config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .map_err(nats)?;
        let js = jetstream::new(client);
        // Created or updated: a changed setting (say `max_deliver`) takes effect on start.
        js.create_or_update_stream(stream::Config {
            name: config.dlq_stream.clone(),
            subjects: vec![format!("{}.>", config.dlq_prefix)],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
        js.create_or_update_stream(crate::relay::events_stream(
            &config.stream,
            &config.subject_prefix,
        ))
        .await
        .map_err(nats)?;
        let events = js.get_stream(&config.stream).await.map_err(nats)?;
        let filter = format!("{}.>", config.subject_prefix);
        // Where the consumer starts cannot be updated, and a replay set it: keep it.
        let deliver_policy = match events.get_consumer::<pull::Config>(worker.name()).await {
            Ok(existing) => existing.cached_info().config.deliver_policy,
            Err(_) => DeliverPolicy::All,
        };
        let mut consumer: Consumer<pull::Config> = events
            .create_consumer(pull::Config {
                durable_name: Some(worker.name().into()),
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
                "consumer {} is `{}` with ack wait {:?} and {} deliveries at most, not `{filter}`, {:?} and {}",
                worker.name(),
                info.config.filter_subject,
                info.config.ack_wait,
                info.config.max_deliver,
                config.ack_wait,
                config.max_deliver
            )));
        }
        js.create_or_update_stream(config.advisory_stream_config())
            .await
            .map_err(nats)?;
        let advisory_filter = config.max_deliveries_subject(worker.name());
        let mut advisories: Consumer<pull::Config> = js
            .get_stream(config.advisory_stream())
            .await
            .map_err(nats)?
            .create_consumer(pull::Config {
                durable_name: Some(worker.name().into()),
                filter_subject: advisory_filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let info = advisories.info().await.map_err(nats)?;
        if info.config.filter_subject != advisory_filter {
            return Err(WorkerError::Nats(format!(
                "advisory consumer {} filters `{}`, not `{advisory_filter}`",
                worker.name(),
                info.config.filter_subject
            )));
        }
        Ok(Self {
            pool,
            worker,
            config,
            js,
            events,
            consumer,
            advisories,
            outbound: Outbound {
                mailer: None,
                webhooks: integration::default_client(),
            },
        })
    }

    /// The SMTP client the notification worker sends with; without one it only records.
    pub fn with_mailer(mut self, mailer: Option<Mailer>) -> Self {
        self.outbound.mailer = mailer;
        self
    }

    /// The HTTP client the integration worker delivers webhooks with (by default one that
    /// trusts the webpki roots only; see `integration::client_with`).
    pub fn with_webhook_client(mut self, client: WebhookClient) -> Self {
        self.outbound.webhooks = client;
        self
    }

    /// The event a message carries, or why it cannot be read (a poison message).
    fn read(&self, message: &Message) -> Result<Delivered, String> {
        delivered(
            message.headers.as_ref(),
            message.subject.as_str(),
            &self.config.subject_prefix,
            &message.payload,
        )
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

    /// Settle a batch of received messages: together where the worker allows it, else (and
    /// for what fails together) one by one.
    async fn handle_batch(&self, messages: &[Message]) -> Result<(), WorkerError> {
        let alone = match self.worker {
            // Its effects are only rows: the whole batch can share one transaction.
            Worker::Analytics => self.step_together(messages).await?,
            // Mail and webhooks go out one message at a time, each in the transaction that
            // records it. What was handled before, and what sends nothing, is settled
            // together.
            Worker::Notification | Worker::Integration => {
                let fresh = self.skip_processed(messages).await?;
                self.quiet_together(fresh).await?
            }
        };
        for message in alone {
            self.settle(message).await?;
        }
        Ok(())
    }

    /// Handle the readable messages of a batch together, set-based: one transaction, one
    /// statement for the processed records and one per table for the folded effects, then
    /// the acks. A commit (and its WAL flush) and a few round trips per message would cap a
    /// worker below the event rate. Returns the messages left to settle one by one: those
    /// that cannot be read (poison, dead-lettered alone) and, if the batch failed, all of
    /// them, so that a failure is retried or dead-lettered alone and never holds the others.
    async fn step_together<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<Vec<&'m Message>, WorkerError> {
        let mut alone = Vec::new();
        let mut readable = Vec::with_capacity(messages.len());
        for message in messages {
            let read = self
                .read(message)
                .map_err(HandleError::Poison)
                .and_then(|event| Ok((event.event_id, analytics::Effects::of(&event)?)));
            match read {
                Ok((event_id, effects)) => readable.push((message, event_id, effects)),
                Err(_) => alone.push(message),
            }
        }
        if readable.is_empty() {
            return Ok(alone);
        }
        let events: Vec<(Uuid, &analytics::Effects)> =
            readable.iter().map(|(_, id, fx)| (*id, fx)).collect();
        let started = Instant::now();
        let outcome = self.handle_together(&events).await;
        let messages = readable.iter().map(|(message, _, _)| *message).collect();
        self.settled_together(messages, started, outcome, &mut alone)
            .await?;
        Ok(alone)
    }

    /// After the transaction of a batch settled together: acknowledge its messages, or, if
    /// it failed, add them to those to settle one by one.
    async fn settled_together<'m>(
        &self,
        messages: Vec<&'m Message>,
        started: Instant,
        outcome: Result<(), HandleError>,
        alone: &mut Vec<&'m Message>,
    ) -> Result<(), WorkerError> {
        match outcome {
            Ok(()) => {
                self.observe_duration(started);
                for message in &messages {
                    message.ack().await.map_err(nats)?;
                }
                metrics::counter!("ordo_worker_processed_total", "worker" => self.worker.name())
                    .increment(messages.len() as u64);
            }
            Err(e) => {
                tracing::debug!(worker = self.worker.name(), error = %telemetry::redact(&e.to_string()), "batch failed; settling one by one");
                alone.extend(messages);
            }
        }
        Ok(())
    }

    /// Handle the messages that send nothing (no mail, no webhook) in one transaction: the
    /// processed records in one statement, and the rows some of them write (a customer's
    /// contact details), then the acks. One commit per message would be a WAL flush per
    /// event for each of these workers. Returns the messages to settle one by one: those
    /// that send something, those that cannot be read, and all of them if this fails.
    async fn quiet_together<'m>(
        &self,
        messages: Vec<&'m Message>,
    ) -> Result<Vec<&'m Message>, WorkerError> {
        let patterns = match self.worker {
            Worker::Integration => match integration::subscribed_patterns(&self.pool).await {
                Ok(patterns) => Some(patterns),
                Err(_) => return Ok(messages),
            },
            _ => None,
        };
        let sends = |event_type: &str| match self.worker {
            Worker::Notification => notification::sends_mail(event_type),
            Worker::Integration => patterns
                .iter()
                .flatten()
                .any(|p| integration::matches(p, event_type)),
            Worker::Analytics => false,
        };
        let mut alone = Vec::new();
        let mut quiet = Vec::new();
        for message in messages {
            match self.read(message) {
                Ok(event) if !sends(&event.event_type) => quiet.push((message, event)),
                _ => alone.push(message),
            }
        }
        if quiet.is_empty() {
            return Ok(alone);
        }
        let started = Instant::now();
        let outcome = self.record_quiet(&quiet).await;
        let messages = quiet.iter().map(|(message, _)| *message).collect();
        self.settled_together(messages, started, outcome, &mut alone)
            .await?;
        Ok(alone)
    }

    /// Insert the processed records of `ids` in one statement; returns the ids that were not
    /// recorded before (those whose effects are still to be written).
    async fn record_processed(
        &self,
        tx: &mut PgConnection,
        ids: BTreeSet<Uuid>,
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        Ok(sqlx::query_scalar(&format!(
            "INSERT INTO {} (event_id) SELECT * FROM UNNEST($1::uuid[])
             ON CONFLICT DO NOTHING RETURNING event_id",
            self.worker.processed_table()
        ))
        .bind(ids.into_iter().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect())
    }

    async fn record_quiet(&self, quiet: &[(&Message, Delivered)]) -> Result<(), HandleError> {
        let ids: BTreeSet<Uuid> = quiet.iter().map(|(_, event)| event.event_id).collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh = self.record_processed(&mut tx, ids).await?;
        // Only the notification worker writes anything for such events; the integration
        // worker's would be a lookup of endpoints that, a moment ago, wanted none of them.
        for (_, event) in quiet {
            if fresh.remove(&event.event_id) && self.worker == Worker::Notification {
                self.worker
                    .handle(&self.pool, &mut tx, event, &self.outbound)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Acknowledge the messages whose events this worker handled before (a redelivery, a
    /// replay) with one query, and return the others.
    async fn skip_processed<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<Vec<&'m Message>, WorkerError> {
        let id = |message: &Message| event_id_in(message.headers.as_ref());
        let ids: Vec<Uuid> = messages.iter().filter_map(id).collect();
        if ids.is_empty() {
            return Ok(messages.iter().collect());
        }
        let done: HashSet<Uuid> = match sqlx::query_scalar(&format!(
            "SELECT event_id FROM {} WHERE event_id = ANY($1)",
            self.worker.processed_table()
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        {
            Ok(done) => done.into_iter().collect(),
            // Each message's own transaction will meet the error and back off.
            Err(_) => return Ok(messages.iter().collect()),
        };
        let mut rest = Vec::with_capacity(messages.len());
        for message in messages {
            match id(message) {
                Some(event_id) if done.contains(&event_id) => {
                    message.ack().await.map_err(nats)?;
                    metrics::counter!("ordo_worker_processed_total", "worker" => self.worker.name())
                        .increment(1);
                }
                _ => rest.push(message),
            }
        }
        Ok(rest)
    }

    /// Record the events as processed and write the effects of those that were not yet,
    /// each once even if the batch holds it twice, in one transaction.
    async fn handle_together(
        &self,
        events: &[(Uuid, &analytics::Effects)],
    ) -> Result<(), HandleError> {
        let ids: BTreeSet<Uuid> = events.iter().map(|(id, _)| *id).collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh = self.record_processed(&mut tx, ids).await?;
        let mut effects = analytics::Effects::default();
        for (id, event_effects) in events {
            if fresh.remove(id) {
                effects.absorb(event_effects);
            }
        }
        effects.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    fn observe_duration(&self, started: Instant) {
        metrics::histogram!("ordo_worker_handler_duration_seconds", "worker" => self.worker.name())
            .record(started.elapsed().as_secs_f64());
    }

    async fn settle(&self, message: &Message) -> Result<(), WorkerError> {
        let attempts = message.info().map(|i| i.delivered).unwrap_or(1);
        let outcome = match self.read(message) {
            Ok(event) => {
                let span = event.span(self.worker);
                span.record("attempt", attempts);
                self.handle(&event).instrument(span).await
            }
            Err(reason) => Err(HandleError::Poison(reason)),
        };
        if outcome.is_err() {
            metrics::counter!("ordo_worker_failed_total", "worker" => self.worker.name())
                .increment(1);
        }
        match outcome {
            Ok(()) => {
                message.ack().await.map_err(nats)?;
                metrics::counter!("ordo_worker_processed_total", "worker" => self.worker.name())
                    .increment(1);
            }
            Err(HandleError::Poison(reason)) => {
                self.dead_letter(message, attempts, &reason).await?
            }
            Err(e) if attempts >= self.config.max_deliver => {
                self.dead_letter(message, attempts, &e.to_string()).await?
            }
            Err(e) => {
                let delay = self
                    .config
                    .backoff
                    .get((attempts - 1).max(0) as usize)
                    .or(self.config.backoff.last())
                    .copied();
                let error = telemetry::redact(&e.to_string()).into_owned();
                tracing::warn!(
                    worker = self.worker.name(),
                    attempts,
                    error,
                    "handler failed; redelivering"
                );
                message.ack_with(AckKind::Nak(delay)).await.map_err(nats)?;
            }
        }
        Ok(())
    }

    /// Handle once: the processed record and the effects commit together.
    async fn handle(&self, event: &Delivered) -> Result<(), HandleError> {
        let mut tx = self.pool.begin().await?;
        let fresh = !self
            .record_processed(&mut tx, BTreeSet::from([event.event_id]))
            .await?
            .is_empty();
        if fresh {
            let started = Instant::now();
            self.worker
                .handle(&self.pool, &mut tx, event, &self.outbound)
                .await?;
            self.observe_duration(started);
        }
        tx.commit().await?;
        tracing::debug!(fresh, "message handled");
        Ok(())
    }

    /// Dead-letter a delivered message on its last allowed delivery (or a poison one), then
    /// terminate it.
    async fn dead_letter(
        &self,
        message: &Message,
        attempts: i64,
        reason: &str,
    ) -> Result<(), WorkerError> {
        let letter = Letter {
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            payload: &message.payload,
            stream_sequence: message.info().map(|i| i.stream_sequence).unwrap_or(0),
            attempts,
        };
        self.dead_letter_once(&letter, reason).await?;
        message.ack_with(AckKind::Term).await.map_err(nats)?;
        Ok(())
    }

    /// Publish the dead letter to `ORDO_DLQ` and record its row, unless the worker handled
    /// the event after all or already has a dead letter for it (waiting, or for this very
    /// delivery); `false` then. The check and the insert run under a transaction-scoped lock
    /// on the event, so the two ways a message becomes a dead letter (the worker's last
    /// delivery, JetStream's max-deliveries advisory) and a repeated advisory record one.
    async fn dead_letter_once(
        &self,
        letter: &Letter<'_>,
        reason: &str,
    ) -> Result<bool, WorkerError> {
        let event_id = letter.event_id();
        let mut tx = self.pool.begin().await?;
        let key = match event_id {
            Some(id) => format!("dead-letter:{}:{id}", self.worker.name()),
            None => format!(
                "dead-letter:{}:#{}",
                self.worker.name(),
                letter.stream_sequence
            ),
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let settled: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE event_id = $2)
                 OR EXISTS (SELECT 1 FROM workers.dead_letters
                             WHERE worker = $1
                               AND ((stream_sequence = $3 AND $3 > 0)
                                    OR (event_id = $2 AND redriven_at IS NULL)))",
            self.worker.processed_table()
        ))
        .bind(self.worker.name())
        .bind(event_id)
        .bind(letter.stream_sequence as i64)
        .fetch_one(&mut *tx)
        .await?;
        if settled {
            tx.commit().await?;
            return Ok(false);
        }
        // A dead letter is its own message, not deduplicated against the original; one id
        // per delivery given up on, so that a retry after a crash between this publish and
        // the commit is dropped by the DLQ stream's duplicate window.
        let message_id = if letter.stream_sequence > 0 {
            format!(
                "dlq-{}-{}-{}",
                self.worker.name(),
                self.config.stream,
                letter.stream_sequence
            )
        } else {
            format!("dlq-{}", Uuid::now_v7())
        };
        self.publish_dead_letter(letter, reason, message_id).await?;
        self.record_dead_letter(&mut *tx, letter, reason).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publish a dead letter to `ORDO_DLQ` (`ordo.dlq.<worker>`) and wait for its ack.
    async fn publish_dead_letter(
        &self,
        letter: &Letter<'_>,
        reason: &str,
        message_id: String,
    ) -> Result<(), WorkerError> {
        let mut headers = letter.headers.cloned().unwrap_or_default();
        headers.insert("ordo-dead-letter-reason", reason);
        headers.insert("ordo-original-subject", letter.subject);
        headers.insert("ordo-attempts", letter.attempts.to_string().as_str());
        headers.insert("Nats-Msg-Id", message_id.as_str());
        let subject = format!("{}.{}", self.config.dlq_prefix, self.worker.name());
        self.js
            .publish_with_headers(subject, headers, letter.payload.to_vec().into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// The dead letter's row in `workers.dead_letters`, what operators list and redrive.
    async fn record_dead_letter(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        letter: &Letter<'_>,
        reason: &str,
    ) -> Result<(), WorkerError> {
        sqlx::query(
            "INSERT INTO workers.dead_letters (id, worker, event_id, subject, stream_sequence, attempts, error, body, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(self.worker.name())
        .bind(letter.event_id())
        .bind(letter.subject)
        .bind(letter.stream_sequence as i64)
        .bind(letter.attempts)
        .bind(reason)
        .bind(String::from_utf8_lossy(letter.payload).into_owned())
        .bind(crate::ops::headers_json(letter.headers))
        .execute(db)
        .await?;
        metrics::counter!("ordo_worker_dead_lettered_total", "worker" => self.worker.name())
            .increment(1);
        tracing::error!(
            worker = self.worker.name(),
            stream_sequence = letter.stream_sequence,
            reason = %telemetry::redact(reason),
            "message dead-lettered"
        );
        Ok(())
    }

    /// Handle one max-deliveries advisory (the JSON JetStream emitted): the message it
    /// names was delivered `max_deliver` times and never settled (the worker crashed, or
    /// its handler outlived the ack wait), so JetStream gave up on it without a word to the
    /// worker. The message is read back from the events stream and dead-lettered like any
    /// other (`dead_letter_once`): handling the same advisory twice records one dead letter.
    pub async fn handle_advisory(&self, payload: &[u8]) -> Result<AdvisoryOutcome, WorkerError> {
        let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(payload) {
            Ok(advisory) => advisory,
            Err(e) => {
                tracing::warn!(worker = self.worker.name(), error = %e, "unreadable max-deliveries advisory; ignored");
                return Ok(AdvisoryOutcome::Ignored);
            }
        };
        if advisory.stream != self.config.stream || advisory.consumer != self.worker.name() {
            return Ok(AdvisoryOutcome::Ignored);
        }
        let original = match self.events.get_raw_message(advisory.stream_seq).await {
            Ok(original) => original,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                tracing::error!(
                    worker = self.worker.name(),
                    stream_sequence = advisory.stream_seq,
                    "a message JetStream gave up on is no longer in the events stream; it cannot be dead-lettered"
                );
                return Ok(AdvisoryOutcome::Ignored);
            }
            Err(e) => return Err(nats(e)),
        };
        let letter = Letter {
            subject: original.subject.as_str(),
            headers: Some(&original.headers),
            payload: &original.payload,
            stream_sequence: advisory.stream_seq,
            attempts: advisory.deliveries,
        };
        let reason = format!(
            "not settled after {} deliveries (max deliveries reached)",
            advisory.deliveries
        );
        Ok(if self.dead_letter_once(&letter, &reason).await? {
            AdvisoryOutcome::DeadLettered
        } else {
            AdvisoryOutcome::AlreadySettled
        })
    }

    /// Settle one captured advisory: acknowledged once what it asks for is durable (or
    /// there is nothing to do), else redelivered after a pause.
    async fn settle_advisory(&self, message: &Message) -> Result<(), WorkerError> {
        match self.handle_advisory(&message.payload).await {
            Ok(_) => message.ack().await.map_err(nats),
            Err(e) => {
                tracing::warn!(worker = self.worker.name(), error = %e, "max-deliveries advisory not handled; retrying");
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
                    .map_err(nats)
            }
        }
    }

    /// Handle messages until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            if let Err(e) = self.consume(&mut shutdown).await {
                tracing::warn!(worker = self.worker.name(), error = %e, "worker failed; retrying");
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
        let mut advisories = self
            .advisories
            .stream()
            .max_messages_per_batch(10)
            .messages()
            .await
            .map_err(nats)?;
        loop {
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
            let Some(batch) = batch else {
                return Err(WorkerError::Nats("the message stream ended".into()));
            };
            let mut messages = Vec::with_capacity(batch.len());
            let mut failure = None;
            for message in batch {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => failure = Some(nats(e)),
                }
            }
            self.handle_batch(&messages).await?;
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
