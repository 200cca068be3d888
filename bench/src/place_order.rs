//! A load harness: concurrent HTTP clients placing orders against a running server.
//!
//! Each client registers nothing itself: the harness first registers a pool of customers,
//! then every client places orders in a loop for the duration. Latency is measured per
//! request, from send to the complete response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server's base URL.
    #[arg(long, env = "ORDO_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A storefront or admin API key (`ordo keys create --role storefront --name bench`).
    #[arg(long, env = "ORDO_API_KEY")]
    key: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of unmeasured warm-up before it.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Send every command with an `Idempotency-Key` of its own (the answer is then stored
    /// with the events).
    #[arg(long)]
    idempotency_keys: bool,
    /// Target rate in requests per second across all clients; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Customers to spread orders over.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..))]
    customers: u16,
    /// Give every order a shipping address (personal data: sealed with the customer's key
    /// when the server has `ORDO_MASTER_KEY`), to measure what encryption costs.
    #[arg(long)]
    shipping_address: bool,
}

struct Totals {
    latency: Histogram<u64>,
    ok: u64,
    failed: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let auth = format!("Bearer {}", args.key);

    let mut customers = Vec::with_capacity(usize::from(args.customers));
    for i in 0..args.customers {
        let resp = client
            .post(format!("{base}/v1/customers"))
            .header("authorization", &auth)
            .json(&json!({"email": format!("bench{i}@example.com"), "name": format!("Bench {i}")}))
            .send()
            .await
            .context("cannot reach the server")?;
        if !resp.status().is_success() {
            bail!(
                "registering a customer answered {}: {}",
                resp.status(),
                resp.text().await?
            );
        }
        let body: Value = resp.json().await?;
        customers.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    let customers = Arc::new(customers);

    let totals = Arc::new(Mutex::new(Totals {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ok: 0,
        failed: 0,
    }));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    // With a target rate, each client sends on its own fixed schedule, staggered.
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));

    // Beside the load, a probe measures how long a committed order takes to show in the
    // orders read model: it places an order, then reads it with `min_position` (the server
    // answers once the projection has applied that event) — ten times a second.
    let probe = {
        let (client, base, auth, customers) = (
            client.clone(),
            base.clone(),
            auth.clone(),
            customers.clone(),
        );
        tokio::spawn(async move {
            let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut stale = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < end {
                tick.tick().await;
                let body = json!({"customer_id": customers[0], "currency": "EUR",
                                  "lines": [{"sku": "PROBE", "name": "Probe", "quantity": 1, "unit_price": 1}]});
                let Ok(resp) = client
                    .post(format!("{base}/v1/orders"))
                    .header("authorization", &auth)
                    .json(&body)
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(placed) = resp.json::<Value>().await else {
                    continue;
                };
                let (Some(id), Some(position)) =
                    (placed["id"].as_str(), placed["position"].as_i64())
                else {
                    continue;
                };
                let committed = Instant::now();
                let read = client
                    .get(format!("{base}/v1/orders/{id}?min_position={position}"))
                    .header("authorization", &auth)
                    .send()
                    .await;
                if committed >= measure_from {
                    if matches!(&read, Ok(r) if r.status().is_success()) {
                        lag.record(committed.elapsed().as_micros().max(1) as u64)?;
                    } else {
                        stale += 1;
                    }
                }
            }
            anyhow::Ok((lag, stale))
        })
    };

    let (idempotency_keys, shipping_address, run) = (
        args.idempotency_keys,
        args.shipping_address,
        uuid::Uuid::now_v7().simple(),
    );
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
        let (customers, totals) = (customers.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = worker;
            // The clients' schedules are staggered over one interval, so that together they
            // send a steady stream at the target rate, not bursts of `concurrency` at once.
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |every| {
                    every.mul_f64(worker as f64 / args.concurrency as f64)
                });
            while Instant::now() < end {
                if let Some(every) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                }
                let customer = &customers[n % customers.len()];
                n += 1;
                let mut body = json!({
                    "customer_id": customer,
                    "currency": "EUR",
                    "lines": [
                        {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": 1250},
                        {"sku": "TEE-2", "name": "T-shirt", "quantity": 1, "unit_price": 1999}
                    ]
                });
                if shipping_address {
                    body["shipping_address"] = json!({"line1": "12 Rue des Lilas",
                        "city": "Lyon", "postal_code": "69003", "country": "FR"});
                }
                let sent = Instant::now();
                let mut request = client
                    .post(format!("{base}/v1/orders"))
                    .header("authorization", &auth);
                if idempotency_keys {
                    request =
                        request.header("idempotency-key", format!("bench-{worker}-{n}-{run}"));
                }
                let result = request.json(&body).send().await;
                let success = match result {
                    Ok(resp) => resp.status().as_u16() == 201 && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= measure_from && Instant::now() <= end {
                    local.record(sent.elapsed().as_micros().max(1) as u64)?;
                    if success {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
            }
            let mut t = totals.lock().await;
            t.latency.add(&local)?;
            t.ok += ok;
            t.failed += failed;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let (lag, stale) = probe.await??;
    let t = totals.lock().await;
    let secs = args.duration as f64;
    let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
    let report = format!(
        "place-order: {} ok, {} failed in {secs:.0} s with {} clients{}{}\n\
         throughput: {:.0} commands/s\n\
         latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n\
         read-model lag ms (commit -> visible in orders, {} probes): p50 {:.2}  p99 {:.2}  (not answered 200: {})",
        t.ok,
        t.failed,
        args.concurrency,
        if args.idempotency_keys {
            ", each with an Idempotency-Key"
        } else {
            ""
        },
        if args.rate > 0 {
            format!(" at a target of {}/s", args.rate)
        } else {
            String::new()
        },
        t.ok as f64 / secs,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        t.latency.max() as f64 / 1000.0,
        lag.len(),
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        stale,
    );
    say!("{report}");
    Ok(())
}
