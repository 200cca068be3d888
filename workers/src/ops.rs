//! Operating the workers: status and lag, replay from a position or a time, dead letters and
//! their redrive. Used by the admin API and the CLI.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::jetstream::WorkerConfig;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("no worker is called `{0}`")]
    UnknownWorker(String),
    #[error("no event has position {0}")]
    UnknownPosition(i64),
    #[error("the {0} worker's effects are sums in its own tables: repeating them would count every event twice")]
    CannotReprocess(String),
}

fn nats(e: impl std::fmt::Display) -> OpsError {
    OpsError::Nats(e.to_string())
}

pub use crate::jetstream::headers_json;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    /// `notification`, `analytics` or `integration`.
    pub name: String,
    /// Messages not yet delivered to the worker; `null` when its consumer does not exist.
    pub pending: Option<u64>,
    /// Delivered, not yet acknowledged.
    pub in_flight: Option<usize>,
    pub redelivered: Option<usize>,
    /// Dead letters not redriven.
    pub dead_letters: i64,
    pub last_error: Option<String>,
    /// What the worker's outbox holds: e-mails for notification (the mail sender's queue),
    /// webhook deliveries for integration (all endpoints; per endpoint in
    /// `GET /v1/webhooks`); `null` for analytics.
    pub outbox: Option<OutboxStatus>,
}

/// A delivery outbox's queue and outcomes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct OutboxStatus {
    /// Waiting to be sent (or retried).
    pub pending: i64,
    /// Age of the oldest waiting one, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
    /// Sent (e-mails) or delivered (webhooks).
    pub done: i64,
    /// Given up on after the last scheduled attempt.
    pub failed: i64,
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub items: Vec<WorkerStatus>,
}

/// The outbox of `worker`, if it has one.
///
/// Neither reads the history it counts: pending mail is counted through a partial index,
/// sent mail and every webhook count from totals kept as rows change (migrations 0173,
/// 0175, 0178; [`crate::notification::QUEUE`], [`crate::integration::endpoints::VIEW`]).
async fn outbox(pool: &PgPool, worker: Worker) -> Result<Option<OutboxStatus>, sqlx::Error> {
    let integration;
    let query = match worker {
        Worker::Notification => crate::notification::QUEUE,
        Worker::Integration => {
            integration = format!(
                "SELECT coalesce(sum(v.pending), 0)::int8 AS pending,
                    coalesce(max(v.oldest_pending_seconds), 0)::float8 AS oldest_pending_seconds,
                    coalesce(sum(v.delivered), 0)::int8 AS done,
                    coalesce(sum(v.failed), 0)::int8 AS failed
               FROM ({}) v",
                crate::integration::endpoints::VIEW
            );
            &integration
        }
        Worker::Analytics => return Ok(None),
    };
    sqlx::query_as(query).fetch_one(pool).await.map(Some)
}

/// A message a worker gave up on, kept to be redriven.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: Uuid,
    pub worker: String,
    pub event_id: Option<Uuid>,
    pub subject: String,
    pub stream_sequence: i64,
    pub attempts: i64,
    pub error: String,
    pub created_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
}

/// `GET /v1/dead-letters`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetter>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    /// From the event at this global position (and everything published after it).
    Position(i64),
    Time(DateTime<Utc>),
}

/// Per worker (`$1`, their names): how many of its dead letters wait for a redrive (through
/// `dead_letters_waiting`) and the error of its newest (one probe of
/// `dead_letters_by_worker`). Grouping the table read every dead letter ever kept.
pub const LETTERS_BY_WORKER: &str = "SELECT w.worker,
        (SELECT count(*) FROM workers.dead_letters d
          WHERE d.worker = w.worker AND d.redriven_at IS NULL),
        (SELECT d.error FROM workers.dead_letters d
          WHERE d.worker = w.worker ORDER BY d.created_at DESC, d.id DESC LIMIT 1)
   FROM unnest($1::text[]) AS w (worker)";

/// The columns of a [`DeadLetter`].
const DEAD_LETTER_COLUMNS: &str =
    "id, worker, event_id, subject, stream_sequence, attempts, error, created_at, redriven_at";

/// The newest 500 dead letters of every worker that has any: each worker's newest through
/// `dead_letters_by_worker`, merged (`newest_of_each`). Ordering the whole table read every
/// dead letter ever kept.
pub static NEWEST_DEAD_LETTERS: LazyLock<String> = LazyLock::new(|| {
    crate::newest::newest_of_each("workers.dead_letters", "worker", DEAD_LETTER_COLUMNS, "500")
});

pub struct WorkersAdmin {
    config: WorkerConfig,
    js: OnceCell<jetstream::Context>,
}

impl WorkersAdmin {
    pub fn new(config: WorkerConfig) -> Self {
        Self {
            config,
            js: OnceCell::new(),
        }
    }

    async fn js(&self) -> Result<&jetstream::Context, OpsError> {
        self.js
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(self.config.nats_url.as_str())
                    .await
                    .map_err(nats)?;
                Ok(jetstream::new(client))
            })
            .await
    }

    fn known(name: &str) -> Result<(), OpsError> {
        if Worker::from_name(name).is_some() {
            Ok(())
        } else {
            Err(OpsError::UnknownWorker(name.into()))
        }
    }

    pub async fn status(&self, pool: &PgPool) -> Result<Vec<WorkerStatus>, OpsError> {
        let letters: Vec<(String, i64, Option<String>)> = sqlx::query_as(LETTERS_BY_WORKER)
            .bind(Worker::ALL.map(Worker::name))
            .fetch_all(pool)
            .await?;
        let letters: HashMap<String, (i64, Option<String>)> =
            letters.into_iter().map(|(w, n, e)| (w, (n, e))).collect();
        let stream = match self.js().await {
            Ok(js) => js.get_stream(&self.config.stream).await.ok(),
            Err(_) => None,
        };
        let mut out = Vec::new();
        for worker in Worker::ALL {
            let name = worker.name();
            let info = match &stream {
                Some(s) => s.consumer_info(name).await.ok(),
                None => None,
            };
            let (dead_letters, last_error) = letters.get(name).cloned().unwrap_or((0, None));
            out.push(WorkerStatus {
                name: name.into(),
                pending: info.as_ref().map(|i| i.num_pending),
                in_flight: info.as_ref().map(|i| i.num_ack_pending),
                redelivered: info.as_ref().map(|i| i.num_redelivered),
                dead_letters,
                last_error,
                outbox: outbox(pool, worker).await?,
            });
        }
        Ok(out)
    }

    /// Deliver everything again from `from` on. Handlers stay idempotent (their processed
    /// records), so effects already had are not repeated — unless `reprocess`: then the
    /// worker first forgets the events recorded since the start, and their e-mails or
    /// webhooks go out again. Answers the start time and how many events were forgotten.
    pub async fn replay(
        &self,
        pool: &PgPool,
        name: &str,
        from: ReplayFrom,
        reprocess: bool,
    ) -> Result<(DateTime<Utc>, u64), OpsError> {
        let worker = Worker::from_name(name).ok_or_else(|| OpsError::UnknownWorker(name.into()))?;
        if reprocess && !worker.effects_can_repeat() {
            return Err(OpsError::CannotReprocess(name.into()));
        }
        let start = match from {
            ReplayFrom::Time(t) => t,
            // The message of that event was published after it was recorded.
            ReplayFrom::Position(p) => sqlx::query_scalar(
                "SELECT recorded_at FROM event_store.events WHERE global_position = $1",
            )
            .bind(p)
            .fetch_optional(pool)
            .await?
            .ok_or(OpsError::UnknownPosition(p))?,
        };
        let stream = self
            .js()
            .await?
            .get_stream(&self.config.stream)
            .await
            .map_err(nats)?;
        let forgotten = if reprocess {
            // Every event published since `start` was recorded at or after it.
            sqlx::query(&format!(
                "DELETE FROM {} p USING event_store.events e
                  WHERE e.event_id = p.event_id AND e.recorded_at >= $1",
                worker.processed_table()
            ))
            .bind(start)
            .execute(pool)
            .await?
            .rows_affected()
        } else {
            0
        };
        let _ = stream.delete_consumer(name).await;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: format!("{}.>", self.config.subject_prefix),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                max_deliver: self.config.max_deliver,
                deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        tracing::info!(worker = name, from = %start, reprocess, forgotten, "worker replay");
        Ok((start, forgotten))
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(
        &self,
        pool: &PgPool,
        worker: Option<&str>,
    ) -> Result<DeadLetterList, OpsError> {
        let items = match worker {
            Some(worker) => {
                sqlx::query_as(&format!(
                    "SELECT {DEAD_LETTER_COLUMNS} FROM workers.dead_letters WHERE worker = $1
                      ORDER BY created_at DESC, id DESC LIMIT 500"
                ))
                .bind(worker)
                .fetch_all(pool)
                .await?
            }
            None => sqlx::query_as(&NEWEST_DEAD_LETTERS).fetch_all(pool).await?,
        };
        Ok(DeadLetterList { items })
    }

    /// Publish a dead letter again as the event it was; `false` if there is no such dead
    /// letter waiting. Every worker sees it; those that handled it already skip it.
    pub async fn redrive(&self, pool: &PgPool, id: Uuid) -> Result<bool, OpsError> {
        let row: Option<(String, String, Value)> = sqlx::query_as(
            "SELECT subject, body, headers FROM workers.dead_letters WHERE id = $1 AND redriven_at IS NULL",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        let Some((subject, body, headers)) = row else {
            return Ok(false);
        };
        let mut h = HeaderMap::new();
        for (name, value) in headers.as_object().into_iter().flatten() {
            if name.starts_with("ordo-dead-letter")
                || name == "ordo-original-subject"
                || name == "ordo-attempts"
            {
                continue;
            }
            if let Some(v) = value.as_str() {
                h.insert(name.as_str(), v);
            }
        }
        // A fresh message id: the original may still be inside the duplicate window.
        h.insert(
            "Nats-Msg-Id",
            format!("redrive-{}", Uuid::now_v7()).as_str(),
        );
        self.js()
            .await?
            .publish_with_headers(subject, h, body.into_bytes().into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        sqlx::query("UPDATE workers.dead_letters SET redriven_at = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
        Ok(true)
    }

    /// Redrive the oldest `limit` waiting dead letters of `worker`, one after another
    /// (each published, then marked); returns how many were redriven and how many still
    /// wait. Bounded, so one request never runs for the whole backlog: ask again until
    /// nothing remains.
    pub async fn redrive_all(
        &self,
        pool: &PgPool,
        worker: &str,
        limit: i64,
    ) -> Result<(usize, i64), OpsError> {
        Self::known(worker)?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM workers.dead_letters WHERE worker = $1 AND redriven_at IS NULL
              ORDER BY created_at LIMIT $2",
        )
        .bind(worker)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let mut n = 0;
        for id in ids {
            if self.redrive(pool, id).await? {
                n += 1;
            }
        }
        let remaining: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workers.dead_letters WHERE worker = $1 AND redriven_at IS NULL",
        )
        .bind(worker)
        .fetch_one(pool)
        .await?;
        Ok((n, remaining))
    }
}
