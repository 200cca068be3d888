//! The rebuild benchmark: seed a log of realistic events (made by the domain's own
//! `decide`, so every stream is valid), bring the read models up to date, then rebuild all
//! three at once and report events per second. With `--only analytics`, recompute the
//! analytics worker's tables from the log instead, and report its peak memory too.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use ordo_commands::chain;
use ordo_domain::customer::{Customer, CustomerCommand, RegisterCustomer};
use ordo_domain::event::EventName;
use ordo_domain::order::{NewLine, Order, OrderCommand, PlaceOrder, ShipOrder};
use ordo_domain::payment::{CreatePayment, OrderFacts, Payment, PaymentCommand};
use ordo_domain::values::{Email, Quantity, Sku, Text};
use ordo_domain::{Amount, Currency};
use ordo_projections::{status, Projection, Rebuilder, Runner, RunnerConfig};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use ordo::{migrate, Config};

#[derive(Debug, clap::Args)]
pub struct RebuildBenchArgs {
    #[command(flatten)]
    config: Config,
    /// Seed the log up to at least this many events first.
    #[arg(long, default_value_t = 1_000_000)]
    events: i64,
    /// Events per live batch while the read models catch up before the rebuild.
    #[arg(long, default_value_t = 5000)]
    batch: i64,
    /// Events per bulk-load batch of the rebuild.
    #[arg(long, default_value_t = RunnerConfig::default().rebuild_batch_size)]
    rebuild_batch: i64,
    /// Rebuild only this read model (orders, payments or customers), or recompute
    /// analytics; the three read models by default.
    #[arg(long, value_parser = parse_only)]
    only: Option<Only>,
}

#[derive(Debug, Clone, Copy)]
enum Only {
    Projection(Projection),
    Analytics,
}

fn parse_only(name: &str) -> Result<Only, String> {
    if name == ordo_workers::analytics::NAME {
        return Ok(Only::Analytics);
    }
    Projection::from_name(name)
        .map(Only::Projection)
        .ok_or_else(|| {
            format!("no projection is called `{name}` (orders, payments, customers, analytics)")
        })
}

/// The metadata of every seeded event.
const SEED_METADATA: &str = r#"{"actor_name":"seed","actor_role":"admin"}"#;

/// Rows waiting to be inserted, linked into the hash chain as the appender links events
/// (`ordo_commands::chain`), so that `ordo audit verify` has a real chain to walk.
#[derive(Default)]
struct Rows {
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<&'static str>,
    /// Canonical JSON text: what is hashed is what is stored.
    payload: Vec<String>,
    /// The hash of the last event written: the chain continues from it.
    head: chain::Hash,
}

impl Rows {
    /// Continue the chain from the log's last event.
    async fn after_head(pool: &PgPool) -> anyhow::Result<Self> {
        let last: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT hash FROM event_store.events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let head = last
            .flatten()
            .and_then(|h| chain::Hash::try_from(h.as_slice()).ok())
            .unwrap_or(chain::ZERO);
        Ok(Self {
            head,
            ..Self::default()
        })
    }

    fn push<E: Serialize + EventName>(
        &mut self,
        aggregate_type: &'static str,
        id: Uuid,
        sequence: i64,
        event: &E,
    ) -> anyhow::Result<()> {
        self.aggregate_type.push(aggregate_type);
        self.aggregate_id.push(id.to_string());
        self.sequence.push(sequence);
        self.event_type.push(event.name());
        self.payload
            .push(chain::canonical(&serde_json::to_value(event)?));
        Ok(())
    }

    fn len(&self) -> usize {
        self.sequence.len()
    }

    async fn flush(&mut self, pool: &PgPool) -> anyhow::Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        let recorded_at = chain::to_micros(Utc::now());
        let mut event_ids = Vec::with_capacity(self.len());
        let mut hashes = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let event_id = Uuid::new_v4();
            self.head = chain::link(
                &self.head,
                &chain::Linked {
                    aggregate_type: self.aggregate_type[i],
                    aggregate_id: &self.aggregate_id[i],
                    sequence: self.sequence[i],
                    event_type: self.event_type[i],
                    schema_version: "1",
                    data: &self.payload[i],
                    metadata: SEED_METADATA,
                    event_id,
                    recorded_at,
                },
            );
            event_ids.push(event_id);
            hashes.push(self.head.to_vec());
        }
        sqlx::query(
            "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id, recorded_at, hash)
             SELECT t, i, s, e, '1', p::jsonb, $6::jsonb, id, $7, h
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $8::uuid[], $9::bytea[])
                    WITH ORDINALITY AS u(t, i, s, e, p, id, h, n)
              ORDER BY n",
        )
        .bind(&self.aggregate_type)
        .bind(&self.aggregate_id)
        .bind(&self.sequence)
        .bind(&self.event_type)
        .bind(&self.payload)
        .bind(SEED_METADATA)
        .bind(recorded_at)
        .bind(&event_ids)
        .bind(&hashes)
        .execute(pool)
        .await?;
        *self = Self {
            head: self.head,
            ..Self::default()
        };
        Ok(())
    }
}

/// One stream being written: its state and version.
struct Stream<S> {
    kind: &'static str,
    id: Uuid,
    state: S,
    version: i64,
}

impl<S: Default> Stream<S> {
    fn new(kind: &'static str, id: Uuid) -> Self {
        Self {
            kind,
            id,
            state: S::default(),
            version: 0,
        }
    }

    /// Decide `cmd`, apply and record the events.
    fn exec<C, E>(
        &mut self,
        rows: &mut Rows,
        cmd: C,
        decide: fn(&S, C) -> Result<Vec<E>, ordo_domain::DomainError>,
        apply: fn(&mut S, E),
    ) -> anyhow::Result<()>
    where
        E: Serialize + EventName + Clone,
    {
        for event in decide(&self.state, cmd)? {
            self.version += 1;
            rows.push(self.kind, self.id, self.version, &event)?;
            apply(&mut self.state, event);
        }
        Ok(())
    }
}

pub(crate) async fn seed(pool: &PgPool, target: i64) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(pool)
        .await?;
    if existing >= target {
        tracing::info!(events = existing, "log already seeded");
        return Ok(());
    }
    let started = Instant::now();
    let eur = Currency::parse("EUR")?;
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .context("time")?;
    let mut rows = Rows::after_head(pool).await?;
    let mut written = existing;
    let mut customer_id = Uuid::nil();
    let mut n: u64 = 0;
    while written < target {
        if n.is_multiple_of(5) {
            customer_id = Uuid::now_v7();
            let mut c = Stream::<Customer>::new("customer", customer_id);
            let cmd = CustomerCommand::Register(RegisterCustomer {
                customer_id,
                email: Email::parse(&format!("seed{n}@example.com"))?,
                name: Text::parse("Seed Customer")?,
                phone: None,
                registered_at: at,
            });
            c.exec(&mut rows, cmd, Customer::decide, Customer::apply)?;
        }
        let order_id = Uuid::now_v7();
        let mut o = Stream::<Order>::new("order", order_id);
        let place = OrderCommand::Place(PlaceOrder {
            order_id,
            customer_id,
            currency: eur,
            lines: vec![
                NewLine {
                    sku: Sku::parse("MUG-1")?,
                    name: Text::parse("Mug")?,
                    quantity: Quantity::new(2)?,
                    unit_price: Amount::new(1250)?,
                },
                NewLine {
                    sku: Sku::parse("PEN-2")?,
                    name: Text::parse("Pen")?,
                    quantity: Quantity::new(1)?,
                    unit_price: Amount::new(499)?,
                },
            ],
            shipping_address: None,
            placed_at: at,
        });
        o.exec(&mut rows, place, Order::decide, Order::apply)?;
        o.exec(
            &mut rows,
            OrderCommand::Confirm { at },
            Order::decide,
            Order::apply,
        )?;
        let payment_id = Uuid::now_v7();
        let mut p = Stream::<Payment>::new("payment", payment_id);
        let create = PaymentCommand::Create(CreatePayment {
            payment_id,
            amount: o.state.total,
            currency: eur,
            method: Text::parse("card")?,
            order: OrderFacts {
                order_id,
                customer_id,
                currency: eur,
                status: o.state.status,
            },
            created_at: at,
        });
        p.exec(&mut rows, create, Payment::decide, Payment::apply)?;
        let authorize = PaymentCommand::Authorize {
            provider_reference: Text::parse("psp")?,
            amount: None,
            at,
        };
        p.exec(&mut rows, authorize, Payment::decide, Payment::apply)?;
        if n.is_multiple_of(10) {
            let cancel = OrderCommand::Cancel {
                reason: Text::parse("changed mind")?,
                at,
            };
            o.exec(&mut rows, cancel, Order::decide, Order::apply)?;
            p.exec(
                &mut rows,
                PaymentCommand::Void { at },
                Payment::decide,
                Payment::apply,
            )?;
        } else {
            let capture = PaymentCommand::Capture {
                amount: o.state.total,
                at,
            };
            p.exec(&mut rows, capture, Payment::decide, Payment::apply)?;
            let ship = OrderCommand::Ship(ShipOrder {
                carrier: Text::parse("DHL")?,
                tracking_number: Text::parse("T")?,
                lines: None,
                covered: p.state.coverage(),
                at,
            });
            o.exec(&mut rows, ship, Order::decide, Order::apply)?;
            o.exec(
                &mut rows,
                OrderCommand::Deliver { at },
                Order::decide,
                Order::apply,
            )?;
            if n % 10 == 1 {
                let refund = PaymentCommand::Refund {
                    amount: Amount::new(499)?,
                    reason: Text::parse("pen broke")?,
                    at,
                };
                p.exec(&mut rows, refund, Payment::decide, Payment::apply)?;
            }
        }
        n += 1;
        if rows.len() >= 10_000 {
            written += rows.len() as i64;
            rows.flush(pool).await?;
        }
    }
    written += rows.len() as i64;
    rows.flush(pool).await?;
    tracing::info!(
        events = written,
        orders = n,
        seconds = started.elapsed().as_secs_f64(),
        "seeded"
    );
    Ok(())
}

/// Run every projection's runner until `done` says so; returns the wall time.
async fn run_until(
    pool: &PgPool,
    config: &RunnerConfig,
    done: impl AsyncFn() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut tasks: Vec<_> = Projection::ALL
        .into_iter()
        .map(|p| tokio::spawn(Runner::new(pool.clone(), p, config.clone()).run(stopped.clone())))
        .collect();
    tasks.push(tokio::spawn(
        Rebuilder::new(pool.clone(), config.clone()).run(stopped.clone()),
    ));
    while !done().await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(elapsed)
}

pub async fn run_bench(args: RebuildBenchArgs) -> anyhow::Result<()> {
    let pool = migrate(&args.config).await?;
    seed(&pool, args.events).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await?;
    let head: i64 = sqlx::query_scalar("SELECT max(global_position) FROM event_store.events")
        .fetch_one(&pool)
        .await?;
    if let Some(Only::Analytics) = args.only {
        return analytics(&pool, events, args.rebuild_batch).await;
    }
    let config = RunnerConfig {
        batch_size: args.batch,
        rebuild_batch_size: args.rebuild_batch,
        ..RunnerConfig::default()
    };

    let caught_up = || async {
        for p in Projection::ALL {
            if !status::reached(&pool, p, head).await? {
                return Ok(false);
            }
        }
        anyhow::Ok(true)
    };
    let live = if caught_up().await? {
        None
    } else {
        Some(run_until(&pool, &config, caught_up).await?)
    };

    let rebuilding: Vec<Projection> = match args.only {
        Some(Only::Projection(p)) => vec![p],
        _ => Projection::ALL.to_vec(),
    };
    for p in &rebuilding {
        status::request_rebuild(&pool, *p).await?;
    }
    let names: Vec<&str> = rebuilding.iter().map(|p| p.name()).collect();
    // The end check reads the checkpoint rows only: the full status counts the lag over
    // the log, which on a large log would load the machine every time it is polled.
    let rebuilt = || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projections.checkpoints
              WHERE name = ANY($1) AND rebuild_state IS NOT NULL",
        )
        .bind(&names)
        .fetch_one(&pool)
        .await?;
        anyhow::Ok(waiting == 0)
    };
    let rebuild = run_until(&pool, &config, rebuilt).await?;

    let mut report = format!("log: {events} events\n");
    if let Some(live) = live {
        report += &format!(
            "projecting from zero (three projections at once): {:.1} s, {:.0} events/s\n",
            live.as_secs_f64(),
            events as f64 / live.as_secs_f64()
        );
    }
    report += &format!(
        "rebuild of {} at once: {:.1} s, {:.0} events/s through each read model",
        names.join(", "),
        rebuild.as_secs_f64(),
        events as f64 / rebuild.as_secs_f64()
    );
    say!("{report}");
    Ok(())
}

/// Recompute analytics from the whole log, in this process; report events/s and the
/// process's peak resident memory.
async fn analytics(pool: &PgPool, events: i64, batch: i64) -> anyhow::Result<()> {
    let (_stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let rebuilt = ordo_workers::analytics::rebuild(pool, batch, &stopped, |_| {}).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    say!(
        "log: {events} events\nanalytics recomputed from the log: {elapsed:.1} s, {:.0} events/s ({} read, {} not counted); peak RSS {peak}",
        rebuilt.events as f64 / elapsed,
        rebuilt.events,
        rebuilt.skipped
    );
    Ok(())
}
