//! The delivery pool: sends the outbox's due deliveries, each endpoint with its own queue.
//!
//! Each endpoint with due deliveries has a driver of its own: it leases a window of what
//! the endpoint may take (per endpoint, the oldest pending delivery of each aggregate — an
//! aggregate's deliveries go in order, a later one waits while an earlier one is pending,
//! retries included — at most three rounds of `per_endpoint`), sends them at most
//! `per_endpoint` at a time and within the pool's free slots out of `concurrency`, each on
//! its own task, and leases the next window when this one is sent. An endpoint whose last
//! attempt failed is probed one request at a time with nothing leased ahead, so a hanging
//! endpoint holds one slot until its timeout and nothing else; a healthy one is sent to at
//! the pace it answers. A claim is a lease (`leased_until`), longer than two requests
//! may take: no transaction is open while a request is. Each outcome is
//! recorded in one short transaction: the attempt row, the delivery's new status or next
//! attempt (the retry schedule, which pushes the aggregate's later deliveries back with
//! it), and the endpoint's failing state — an endpoint failing for longer than
//! `disable_after` is disabled.
//!
//! At least once: if the process dies between a 2xx and the record, the lease runs out and
//! the delivery is sent again with the same `webhook-id`, which receivers use to dedupe.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ordo_runtime::process::every;
use ordo_runtime::telemetry;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::client::error_chain;
use super::signing::signatures;
use crate::egress::WebhookClient;
use crate::retry::RetrySchedule;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    /// Requests in flight at once, all endpoints together.
    pub concurrency: usize,
    /// Requests in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// How often the outbox is asked for due deliveries when the last round found none.
    pub poll: Duration,
    pub schedule: RetrySchedule,
    /// An endpoint whose attempts have all failed for this long is disabled.
    pub disable_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: super::TIMEOUT,
            concurrency: 32,
            per_endpoint: 4,
            poll: Duration::from_millis(200),
            schedule: RetrySchedule::default(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// A claimed delivery, with what sending it needs.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    event_type: String,
    aggregate_id: String,
    position: i64,
    body: Value,
    traceparent: Option<String>,
    /// This attempt's number (from 1).
    attempts: i32,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    /// Whether the endpoint's last attempt failed (it is probed one request at a time).
    failing: bool,
}

/// What one attempt got.
#[derive(Debug)]
struct Outcome {
    status_code: Option<u16>,
    error: Option<String>,
    duration: Duration,
}

pub struct DeliveryPool {
    pool: PgPool,
    client: WebhookClient,
    config: DeliveryConfig,
    slots: Arc<Semaphore>,
}

/// An endpoint's states, as its status and the metrics show them.
const STATES: [&str; 3] = ["active", "failing", "disabled"];

const CLAIM: &str = include_str!("claim.sql");

/// How long a driver whose endpoint's queue is drained waits before it claims again.
const DRAINED_PAUSE: Duration = Duration::from_millis(20);
const RECORD: &str = include_str!("record.sql");
const OUTBOX: &str = "integration.outbox";
/// How often the pool asks whether the outbox has outgrown its statistics
/// ([`ordo_commands::db::analyze_if_behind`]): a backlog building up at full rate grows it
/// many times over in seconds, and until the analyze the integration worker's writes
/// (`write.sql`) and the pool's records (`record.sql`) may walk an endpoint's backlog. The
/// question reads one row of `pg_stat_user_tables`; it and the analyze run in a task of
/// their own, so the pool starts drivers meanwhile.
const STATISTICS_EVERY: Duration = Duration::from_secs(1);
/// How often the pool exports its gauges ([`DeliveryPool::export_gauges`]), in a task of
/// their own, so that a slow read of them never holds the loop.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// The pool's look for work, every `poll`: the active endpoints with a delivery due and not
/// leased. Each endpoint's check is one walk of `outbox_due` from its oldest due delivery,
/// which stops at the first one not leased: past a window of leases at most, whatever the
/// backlog. Asked as `EXISTS`, PostgreSQL answered it as a semi-join that read every due
/// delivery of the outbox and grouped them by endpoint: 20 ms for a backlog of 20,000
/// behind a webhook endpoint that never answers, five times a second, growing with the
/// backlog, on the cores the commands use. A lateral `LIMIT 1` cannot be turned into that.
pub const DUE_ENDPOINTS: &str = "SELECT e.id FROM integration.endpoints e
  CROSS JOIN LATERAL (SELECT 1 FROM integration.outbox o
                       WHERE o.endpoint_id = e.id AND o.status = 'pending'
                         AND o.next_attempt_at <= now()
                         AND (o.leased_until IS NULL OR o.leased_until <= now())
                       ORDER BY o.next_attempt_at
                       LIMIT 1) due
 WHERE e.disabled_at IS NULL";

impl DeliveryPool {
    pub fn new(pool: PgPool, client: WebhookClient, config: DeliveryConfig) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Arc::new(Self {
            pool,
            client,
            config,
            slots,
        })
    }

    /// Send due deliveries until `shutdown` turns true; then wait for the requests in
    /// flight (each bounded by the timeout) and record them.
    ///
    /// Every `poll`, the endpoints with due deliveries and no driver get one; a driver ends
    /// when its endpoint has nothing due and nothing in flight.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut drivers: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
        let statistics = tokio::spawn(ordo_commands::db::keep_analyzed(
            self.pool.clone(),
            OUTBOX,
            STATISTICS_EVERY,
            shutdown.clone(),
        ));
        let pool = self.pool.clone();
        let gauges = tokio::spawn(every(GAUGES_EVERY, shutdown.clone(), move || {
            Self::export_gauges(pool.clone())
        }));
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            drivers.retain(|_, driver| !driver.is_finished());
            match self.due_endpoints().await {
                Ok(due) => {
                    for endpoint in due {
                        if let Entry::Vacant(slot) = drivers.entry(endpoint) {
                            let this = self.clone();
                            let stop = shutdown.clone();
                            slot.insert(tokio::spawn(this.drive(endpoint, stop)));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for due webhook deliveries"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        for (_, driver) in drivers {
            let _ = driver.await;
        }
        let _ = statistics.await;
        let _ = gauges.await;
    }

    /// One endpoint's driver: lease a window of the endpoint's due deliveries, send them
    /// at most `per_endpoint` at a time (one at a time while the endpoint is failing), lease
    /// the next window when this one is sent; end when nothing is due and nothing in
    /// flight, or at `shutdown` once the requests in flight are recorded (deliveries leased
    /// and not yet sent are handed back).
    ///
    /// Leasing a window, and pausing briefly after a claim that found the queue drained,
    /// takes one claim per several deliveries instead of one per finished request and
    /// record: under load, the claims' round trips and planning, not the requests, bounded
    /// a healthy endpoint's pace.
    async fn drive(self: Arc<Self>, endpoint: Uuid, mut shutdown: watch::Receiver<bool>) {
        let mut leased: VecDeque<Claimed> = VecDeque::new();
        let mut leased_at = Instant::now();
        // Requests in flight, and outcomes being recorded: a request's slot is free for the
        // next one while its outcome is written.
        let mut in_flight = JoinSet::new();
        let mut recording = JoinSet::new();
        // Whether the endpoint's last attempt failed: then one request at a time probes it,
        // and nothing is leased ahead, so that a hanging endpoint holds one of the pool's
        // slots and no deliveries it cannot take.
        let mut failing = false;
        let per_endpoint = self.config.per_endpoint.max(1);
        // When a claim found less than it had room for, the endpoint's queue is drained:
        // the next claim waits a moment for more to arrive rather than asking again as each
        // request or record ends (which made claims most of the database's work).
        let mut next_claim = Instant::now();
        loop {
            let stopping = *shutdown.borrow() || shutdown.has_changed().is_err();
            // Leased deliveries wait for two rounds of requests at most; ones that waited
            // longer (the pool's slots all taken) go back before their lease runs out.
            if stopping || (!leased.is_empty() && leased_at.elapsed() > 2 * self.config.timeout) {
                self.hand_back(&mut leased).await;
            }
            let window = if failing { 1 } else { self.window() };
            let room = window.saturating_sub(in_flight.len() + recording.len());
            // Whether a claim just found nothing due.
            let mut drained = false;
            if !stopping && leased.is_empty() && room > 0 && Instant::now() >= next_claim {
                match self.claim(endpoint, room).await {
                    Ok(claimed) => {
                        drained = claimed.is_empty();
                        if claimed.len() < room {
                            next_claim = Instant::now() + DRAINED_PAUSE;
                        }
                        failing = claimed.first().map_or(failing, |d| d.failing);
                        leased.extend(claimed);
                        leased_at = Instant::now();
                    }
                    Err(e) => {
                        next_claim = Instant::now() + self.config.poll;
                        tracing::warn!(endpoint.id = %endpoint, error = %e,
                            "cannot claim webhook deliveries");
                    }
                }
            }
            let limit = if failing { 1 } else { per_endpoint };
            while in_flight.len() < limit && recording.len() < per_endpoint && !leased.is_empty() {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some(delivery) = leased.pop_front() else {
                    break;
                };
                let this = self.clone();
                in_flight.spawn(async move {
                    let outcome = this.attempt(&delivery).await;
                    drop(permit);
                    (delivery, outcome)
                });
            }
            if in_flight.is_empty()
                && recording.is_empty()
                && leased.is_empty()
                && (drained || stopping)
            {
                return;
            }
            tokio::select! {
                Some(sent) = in_flight.join_next() => {
                    let Ok((delivery, outcome)) = sent else {
                        // A panicking request: its lease runs out and it is tried again.
                        failing = true;
                        continue;
                    };
                    failing = outcome.error.is_some();
                    if failing {
                        self.hand_back(&mut leased).await;
                    }
                    let this = self.clone();
                    recording.spawn(async move { this.settle(&delivery, &outcome).await });
                }
                Some(_) = recording.join_next() => {}
                _ = tokio::time::sleep_until(next_claim.into()),
                    if !stopping && leased.is_empty() && next_claim > Instant::now() => {}
                // Deliveries that came due meanwhile, or a slot of the pool freed.
                _ = tokio::time::sleep(self.config.poll), if !stopping => {}
                _ = shutdown.changed(), if !stopping => {}
            }
        }
    }

    /// How many deliveries of one endpoint may be leased at once, across every pool: three
    /// rounds of `per_endpoint` (those being recorded are still leased).
    fn window(&self) -> usize {
        3 * self.config.per_endpoint.max(1)
    }

    /// Give back leased deliveries that were not sent: due again at once, their attempt
    /// not counted.
    async fn hand_back(&self, leased: &mut VecDeque<Claimed>) {
        if leased.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = leased.drain(..).map(|d| d.id).collect();
        let handed = sqlx::query(
            "UPDATE integration.outbox
                SET leased_until = NULL, attempts = attempts - 1
              WHERE id = ANY ($1) AND status = 'pending' AND leased_until IS NOT NULL",
        )
        .bind(&ids)
        .execute(&self.pool)
        .await;
        if let Err(e) = handed {
            // Their leases run out and they are sent then.
            tracing::warn!(error = %e, "cannot hand back leased webhook deliveries");
        }
    }

    /// The active endpoints with a delivery due and not leased (perhaps one that waits for
    /// an earlier delivery of its aggregate: its driver finds out).
    async fn due_endpoints(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(DUE_ENDPOINTS)
            .fetch_all(&self.pool)
            .await
    }

    /// One round, for tests: claim what is due at every endpoint, send it and record it
    /// all. Returns how many deliveries were attempted.
    pub async fn step(&self) -> Result<usize, sqlx::Error> {
        let mut claimed = Vec::new();
        for endpoint in self.due_endpoints().await? {
            claimed.extend(self.claim(endpoint, self.config.per_endpoint).await?);
        }
        let n = claimed.len();
        futures::future::join_all(claimed.iter().map(|d| async move {
            let outcome = self.attempt(d).await;
            self.settle(d, &outcome).await;
        }))
        .await;
        Ok(n)
    }

    /// Lease up to `room` of `endpoint`'s due deliveries, no more than the window minus
    /// what any pool has leased at the endpoint already.
    async fn claim(&self, endpoint: Uuid, room: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        if room == 0 {
            return Ok(Vec::new());
        }
        // Long enough for a delivery that waits for two rounds of requests before its own.
        let lease = 3 * self.config.timeout + Duration::from_secs(30);
        // Unprepared: see claim.sql.
        sqlx::query_as(CLAIM)
            .persistent(false)
            .bind(endpoint)
            .bind(i64::try_from(room).unwrap_or(i64::MAX))
            .bind(i64::try_from(self.window()).unwrap_or(i64::MAX))
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await
    }

    /// Send one delivery and count the attempt in the metrics.
    async fn attempt(&self, delivery: &Claimed) -> Outcome {
        let span = tracing::info_span!("webhook.deliver", endpoint.id = %delivery.endpoint_id,
            event.id = %delivery.event_id, attempt = delivery.attempts);
        async {
            let outcome = self.send(delivery).await;
            let endpoint = delivery.endpoint_id.to_string();
            metrics::counter!("ordo_webhook_attempts_total", "endpoint" => endpoint.clone(),
                "outcome" => if outcome.error.is_none() { "ok" } else { "failed" })
            .increment(1);
            metrics::histogram!("ordo_webhook_attempt_duration_seconds", "endpoint" => endpoint)
                .record(outcome.duration.as_secs_f64());
            outcome
        }
        .instrument(span)
        .await
    }

    /// Record an attempt's outcome; a failure to record is logged (the lease runs out and
    /// the delivery is tried again).
    async fn settle(&self, delivery: &Claimed, outcome: &Outcome) {
        if let Err(e) = self.record(delivery, outcome).await {
            tracing::warn!(endpoint.id = %delivery.endpoint_id, event.id = %delivery.event_id,
                error = %e, "cannot record a webhook attempt");
        }
    }

    /// POST the delivery, signed with the endpoint's secret (and the previous one during a
    /// rotation). Never an error: what went wrong is the outcome.
    async fn send(&self, d: &Claimed) -> Outcome {
        let now = Utc::now();
        let body = json!({"type": d.event_type, "timestamp": now, "data": d.body}).to_string();
        let id = d.event_id.to_string();
        let timestamp = now.timestamp();
        let mut secrets = vec![d.secret.as_str()];
        secrets.extend(d.previous_secret.as_deref());
        let started = Instant::now();
        let signature = match signatures(&secrets, &id, timestamp, &body) {
            Ok(signature) => signature,
            Err(e) => {
                return Outcome {
                    status_code: None,
                    error: Some(format!("endpoint {}: {e}", d.endpoint_id)),
                    duration: started.elapsed(),
                }
            }
        };
        let request = match self.client.post(&d.url) {
            Ok(request) => request,
            Err(refused) => {
                return Outcome {
                    status_code: None,
                    error: Some(format!("refused: {refused}")),
                    duration: started.elapsed(),
                }
            }
        };
        let mut request = request
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        // The receiver may continue the trace that began with the storefront's request.
        if let Some(traceparent) = telemetry::outgoing_traceparent(d.traceparent.as_deref()) {
            request = request.header("traceparent", traceparent);
        }
        let sent = request.body(body).send().await;
        let duration = started.elapsed();
        match sent {
            Ok(response) if response.status().is_success() => Outcome {
                status_code: Some(response.status().as_u16()),
                error: None,
                duration,
            },
            Ok(response) => Outcome {
                status_code: Some(response.status().as_u16()),
                error: Some(format!("answered {}", response.status())),
                duration,
            },
            Err(e) => Outcome {
                status_code: None,
                error: Some(error_chain(&e)),
                duration,
            },
        }
    }

    /// Record an attempt and what follows from it, in one statement (record.sql).
    async fn record(&self, d: &Claimed, outcome: &Outcome) -> Result<(), sqlx::Error> {
        let attempt = u32::try_from(d.attempts).unwrap_or(1);
        let retry_in = match outcome.error {
            None => None,
            Some(_) => self.config.schedule.delay_after(attempt),
        };
        let status = match (&outcome.error, retry_in) {
            (None, _) => "delivered",
            (Some(_), Some(_)) => "pending",
            (Some(_), None) => "failed",
        };
        // Prepared: see record.sql.
        let disabled: bool = sqlx::query_scalar(RECORD)
            .bind(d.id)
            .bind(d.endpoint_id)
            .bind(d.event_id)
            .bind(&d.event_type)
            .bind(d.attempts)
            .bind(outcome.status_code.map(i32::from))
            .bind(outcome.error.is_none())
            .bind(&outcome.error)
            .bind(i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX))
            .bind(Uuid::now_v7())
            .bind(status)
            .bind(retry_in.unwrap_or_default().as_secs_f64())
            .bind(&d.aggregate_id)
            .bind(d.position)
            .bind(self.config.disable_after.as_secs_f64())
            .fetch_one(&self.pool)
            .await?;
        if disabled {
            metrics::counter!("ordo_webhook_endpoints_auto_disabled_total").increment(1);
            tracing::warn!(endpoint.id = %d.endpoint_id, "webhook endpoint disabled: failing for too long");
        }
        Ok(())
    }

    /// Per endpoint: deliveries pending, the oldest one's age, and the state.
    async fn export_gauges(pool: PgPool) {
        let rows: Result<Vec<(Uuid, String, i64, f64)>, sqlx::Error> = sqlx::query_as(&format!(
            "SELECT v.id, v.state, v.pending, v.oldest_pending_seconds FROM ({}) v",
            super::endpoints::VIEW
        ))
        .fetch_all(&pool)
        .await;
        let Ok(rows) = rows else { return };
        let mut states: HashMap<&'static str, f64> = HashMap::new();
        for (endpoint, state, pending, oldest) in rows {
            let endpoint = endpoint.to_string();
            metrics::gauge!("ordo_webhook_queue_depth", "endpoint" => endpoint.clone())
                .set(pending as f64);
            metrics::gauge!("ordo_webhook_oldest_pending_seconds", "endpoint" => endpoint.clone())
                .set(oldest);
            for s in STATES {
                let value = if s == state { 1.0 } else { 0.0 };
                metrics::gauge!("ordo_webhook_endpoint_state", "endpoint" => endpoint.clone(), "state" => s)
                    .set(value);
                *states.entry(s).or_default() += value;
            }
        }
        for s in STATES {
            metrics::gauge!("ordo_webhook_endpoints", "state" => s)
                .set(states.get(s).copied().unwrap_or(0.0));
        }
    }
}
