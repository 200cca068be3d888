//! The pipeline benchmark: relay throughput (events published and acknowledged per second)
//! and the latency from an event's commit to a worker's handler at a steady command rate.
//! Needs NATS with JetStream; uses a stream and consumer of its own and deletes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ordo_commands::{Actor, CommandMetadata, Commands};
use ordo_domain::customer::RegisterCustomer;
use ordo_domain::values::{Email, Text};
use ordo_projections::{Projection, Runner, RunnerConfig};
use ordo_workers::ops::WorkersAdmin;
use ordo_workers::{ProcessManager, Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use ordo::{migrate, Config};

#[derive(Debug, clap::Args)]
pub struct PipelineBenchArgs {
    #[command(flatten)]
    config: Config,
    /// Events already in the log for the relay-throughput run (seeded if fewer).
    #[arg(long, default_value_t = 100_000)]
    events: i64,
    /// Commands per second during the latency run (one event each).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before the latency run, not measured: the connection pool fills,
    /// the relay takes its lock and the consumers start pulling. `0` measures from the
    /// first command.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Also run what `ordo serve` runs beside them during the latency run: the three
    /// projection runners, the process manager, and the notification and integration
    /// workers (on the same stream), as one process with every role would.
    #[arg(long)]
    all_roles: bool,
}

/// Whether the projections have applied the whole log and no worker has messages waiting.
async fn caught_up(pool: &PgPool, admin: &WorkersAdmin) -> anyhow::Result<bool> {
    let projections: bool = sqlx::query_scalar(
        "SELECT count(*) = 3 AND bool_and(c.global_position >= e.global_position)
           FROM projections.checkpoints c,
                (SELECT global_position FROM event_store.events
                  ORDER BY global_position DESC LIMIT 1) e",
    )
    .fetch_one(pool)
    .await?;
    let workers = admin.status(pool).await?;
    Ok(projections
        && workers
            .iter()
            .all(|w| w.pending == Some(0) && w.in_flight == Some(0)))
}

/// Whether the relay's checkpoint has reached the last event of the log. (Compared with the
/// last event alone: checking every event would scan the log on each step being timed.)
async fn relayed_all(pool: &PgPool, stream: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(
             (SELECT c.global_position >= e.global_position
                FROM relay.checkpoint c,
                     (SELECT global_position FROM event_store.events
                       ORDER BY global_position DESC LIMIT 1) e
               WHERE c.stream = $1),
             NOT EXISTS (SELECT 1 FROM event_store.events))",
    )
    .bind(stream)
    .fetch_one(pool)
    .await?)
}

pub async fn run_bench(args: PipelineBenchArgs) -> anyhow::Result<()> {
    let pool = migrate(&args.config).await?;
    crate::rebuild::seed(&pool, args.events).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await?;
    let id = Uuid::new_v4().simple().to_string();
    let relay_config = RelayConfig {
        stream: format!("ORDO_BENCH_{id}"),
        subject_prefix: format!("bench{id}.events"),
        ..RelayConfig::new(args.config.nats_url.clone())
    };

    // 1. Relay throughput over the whole log.
    let relay = Relay::connect(pool.clone(), relay_config.clone()).await?;
    relay.ensure_stream().await?;
    let started = Instant::now();
    while !relayed_all(&pool, &relay_config.stream).await? {
        relay.step().await?;
    }
    let relay_secs = started.elapsed().as_secs_f64();

    // 2. Commit → handler latency at a steady rate, relay and analytics worker running.
    let worker_config = WorkerConfig {
        stream: relay_config.stream.clone(),
        subject_prefix: relay_config.subject_prefix.clone(),
        dlq_stream: format!("ORDO_BENCH_DLQ_{id}"),
        dlq_prefix: format!("bench{id}.dlq"),
        ..WorkerConfig::new(args.config.nats_url.clone())
    };
    let worker =
        WorkerRunner::connect(pool.clone(), Worker::Analytics, worker_config.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    let commands = Arc::new(Commands::new(pool.clone()));
    let mut others = Vec::new();
    if args.all_roles {
        for projection in Projection::ALL {
            let runner = Runner::new(pool.clone(), projection, RunnerConfig::default());
            others.push(tokio::spawn(runner.run(stopped.clone())));
        }
        let pm = ProcessManager::new(pool.clone(), commands.clone());
        others.push(tokio::spawn(pm.run(stopped.clone())));
        for other in [Worker::Notification, Worker::Integration] {
            let runner = WorkerRunner::connect(pool.clone(), other, worker_config.clone()).await?;
            others.push(tokio::spawn(runner.run(stopped.clone())));
        }
    }
    // The worker first works through the seeded log, untimed.
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analytics.processed")
        .fetch_one(&pool)
        .await?
        < events
    {
        worker.step(500, Duration::from_millis(200)).await?;
    }
    // And whatever its new consumer still holds: on a database an earlier run filled, the
    // records are all there before the first message is handled.
    while worker.step(500, Duration::from_millis(200)).await? > 0 {}
    // So do the other roles: the projections up to the log's end, the workers' consumers
    // empty.
    let admin = WorkersAdmin::new(worker_config.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    while args.all_roles && !caught_up(&pool, &admin).await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the other roles did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Where the time goes: a plain subscriber on the stream's subjects sees each message as
    // the relay publishes it, splitting commit -> handler into relay and worker stages.
    let nats = async_nats::connect(args.config.nats_url.as_str()).await?;
    let mut published = nats
        .subscribe(format!("{}.>", relay_config.subject_prefix))
        .await?;
    let mut done = stopped.clone();
    let seen = tokio::spawn(async move {
        let mut seen: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        loop {
            let message = tokio::select! {
                message = published.next() => message,
                _ = done.changed() => None,
            };
            let Some(message) = message else { break };
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .and_then(|v| Uuid::parse_str(v.as_str()).ok());
            if let Some(id) = id {
                seen.insert(id, Utc::now());
            }
        }
        seen
    });
    let relay_task = tokio::spawn(relay.run(stopped.clone()));
    let worker_task = tokio::spawn(worker.run(stopped));
    let meta = CommandMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::new_v4(),
        actor: Actor {
            key_id: None,
            name: "bench".into(),
            role: "system".into(),
        },
        request_id: String::new(),
        idempotency_key: None,
        idempotent: None,
        traceparent: None,
        channel: None,
    };
    let in_flight = Arc::new(Semaphore::new(128));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let measured = Instant::now() + Duration::from_secs(args.warmup);
    let end = measured + Duration::from_secs(args.duration);
    let mut load_start = None;
    let mut sent = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        if load_start.is_none() && Instant::now() >= measured {
            load_start = Some(Utc::now());
            sent = 0;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (commands, meta) = (commands.clone(), meta.clone());
        tokio::spawn(async move {
            let n = Uuid::now_v7();
            if let (Ok(email), Ok(name)) = (
                Email::parse(&format!("p{}@example.com", n.simple())),
                Text::parse("Pipeline"),
            ) {
                let cmd = RegisterCustomer {
                    customer_id: n,
                    email,
                    name,
                    phone: None,
                    registered_at: Utc::now(),
                };
                if let Err(e) = commands.register_customer(cmd, &meta).await {
                    tracing::warn!(error = %e, "bench command failed");
                }
            }
            drop(permit);
        });
        sent += 1;
    }
    let _ = in_flight.acquire_many(128).await?;
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analytics.processed")
        .fetch_one(&pool)
        .await?
        < expected
    {
        anyhow::ensure!(Instant::now() < deadline, "the worker did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    let _ = relay_task.await;
    let _ = worker_task.await;
    for task in others {
        let _ = task.await;
    }
    let seen = seen.await?;
    let rows: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT e.event_id, e.recorded_at, p.processed_at
           FROM analytics.processed p JOIN event_store.events e USING (event_id)
          WHERE e.recorded_at >= $1",
    )
    .bind(load_start.unwrap_or_else(Utc::now))
    .fetch_all(&pool)
    .await?;
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
    };
    let total = Percentiles::of(
        rows.iter()
            .map(|(_, recorded, processed)| ms(*recorded, *processed)),
    );
    let relayed = Percentiles::of(
        rows.iter()
            .filter_map(|(id, recorded, _)| seen.get(id).map(|at| ms(*recorded, *at))),
    );
    let handled = Percentiles::of(
        rows.iter()
            .filter_map(|(id, _, processed)| seen.get(id).map(|at| ms(*at, *processed))),
    );

    let js = async_nats::jetstream::new(async_nats::connect(args.config.nats_url.as_str()).await?);
    let _ = js.delete_stream(&relay_config.stream).await;
    let _ = js.delete_stream(format!("ORDO_BENCH_DLQ_{id}")).await;
    let _ = js
        .delete_stream(format!("{}_ADVISORIES", relay_config.stream))
        .await;
    say!(
        "relay: {events} events published and acknowledged in {relay_secs:.1} s: {:.0} events/s\n\
         commit -> analytics handler at {} commands/s for {} s after {} s of warm-up ({sent} sent{}): {total}\n  \
         of which commit -> published by the relay: {relayed}\n  \
         and published -> handler: {handled}",
        events as f64 / relay_secs,
        args.rate,
        args.duration,
        args.warmup,
        if args.all_roles { ", every role running" } else { "" }
    );
    Ok(())
}

/// A latency distribution's p50, p99 and max, in milliseconds.
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: impl Iterator<Item = f64>) -> Self {
        let mut samples: Vec<f64> = samples.collect();
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let last = samples.len().saturating_sub(1);
            samples
                .get((q * last as f64).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            count: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
            self.p50, self.p99, self.max, self.count
        )
    }
}
