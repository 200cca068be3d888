//! The deliveries benchmark: a steady rate of orders with three webhook endpoints on
//! loopback — one that accepts and never answers, one that answers 500 to every second
//! request, one healthy — and what the healthy one and the clients see meanwhile.
//!
//! Reports the healthy endpoint's delivery latency (from the command's send to the
//! webhook's arrival: an upper bound, the command's own latency included), whether it got
//! every event exactly once (by `webhook-id`), how many events the flaky endpoint has
//! received by the end of the drain (its failures wait for the retry schedule: 5 s, 15 s,
//! 45 s, …), and the read-your-writes latency (a read with `min_position` right after each
//! command). The server must run with `ORDO_WEBHOOK_ALLOW_PRIVATE=true`: the endpoints are
//! on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct DeliveriesBenchArgs {
    /// The server's base URL.
    #[arg(long, env = "ORDO_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin API key (it registers the endpoints and places the orders).
    #[arg(long, env = "ORDO_API_KEY")]
    key: String,
    /// Orders per second (one `order.placed` event each).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds to wait after the load for the healthy endpoint to get every event, and
    /// the flaky one as many as its retries bring.
    #[arg(long, default_value_t = 60)]
    drain: u64,
    /// Register no endpoints: the read-your-writes baseline to compare with.
    #[arg(long)]
    without_endpoints: bool,
}

/// What an endpoint received: each `webhook-id` answered 2xx, when it first arrived, and
/// how many times.
#[derive(Default)]
struct Received {
    first: HashMap<String, (Instant, u32)>,
    order_of: HashMap<String, String>,
}

#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Received>>,
    requests: Arc<AtomicU64>,
    flaky: bool,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let n = r.requests.fetch_add(1, Ordering::SeqCst);
    if r.flaky && n % 2 == 1 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let order = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| b["data"]["order_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut received = r.received.lock().unwrap_or_else(|e| e.into_inner());
    received
        .first
        .entry(id.clone())
        .or_insert((Instant::now(), 0))
        .1 += 1;
    received.order_of.insert(id, order);
    StatusCode::NO_CONTENT
}

/// Never answers: the connection stays open until the server gives up on it.
async fn hang() -> StatusCode {
    std::future::pending::<()>().await;
    StatusCode::NO_CONTENT
}

async fn listen(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(args: DeliveriesBenchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let auth = format!("Bearer {}", args.key);

    let healthy = Receiver {
        received: Arc::default(),
        requests: Arc::default(),
        flaky: false,
    };
    let flaky = Receiver {
        flaky: true,
        received: Arc::default(),
        requests: Arc::default(),
    };
    let route = |r: &Receiver| {
        Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone())
    };
    let endpoints = [
        (
            "hanging",
            listen(Router::new().route("/hook", post(hang))).await?,
        ),
        ("flaky", listen(route(&flaky)).await?),
        ("healthy", listen(route(&healthy)).await?),
    ];
    for (name, addr) in endpoints.into_iter().filter(|_| !args.without_endpoints) {
        let resp = client
            .post(format!("{base}/v1/webhooks"))
            .header("authorization", &auth)
            .json(
                &json!({"url": format!("http://{addr}/hook"), "event_types": ["order.placed"],
                          "description": format!("bench: {name}")}),
            )
            .send()
            .await
            .context("cannot reach the server")?;
        if !resp.status().is_success() {
            bail!(
                "registering the {name} endpoint answered {} (is ORDO_WEBHOOK_ALLOW_PRIVATE=true?): {}",
                resp.status(),
                resp.text().await?
            );
        }
    }
    let resp = client
        .post(format!("{base}/v1/customers"))
        .header("authorization", &auth)
        .json(
            &json!({"email": format!("bench-{}@example.com", uuid::Uuid::new_v4().simple()),
                      "name": "Bench"}),
        )
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("registering a customer answered {}", resp.status());
    }
    let customer = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // order id → when its command was sent; and the read-your-writes latencies.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let reads = Arc::new(Mutex::new(histogram()?));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let (client, base, auth, customer) =
            (client.clone(), base.clone(), auth.clone(), customer.clone());
        let (sent, reads, failed) = (sent.clone(), reads.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let order_id = uuid::Uuid::new_v4().to_string();
            let body = json!({"order_id": order_id, "customer_id": customer, "currency": "EUR",
                              "lines": [{"sku": "BENCH", "name": "Bench", "quantity": 1, "unit_price": 100}]});
            let started = Instant::now();
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(order_id.clone(), started);
            let placed = client
                .post(format!("{base}/v1/orders"))
                .header("authorization", &auth)
                .json(&body)
                .send()
                .await;
            let position = match placed {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["position"].as_i64()),
                _ => None,
            };
            let Some(position) = position else {
                failed.fetch_add(1, Ordering::Relaxed);
                sent.lock().unwrap_or_else(|e| e.into_inner()).remove(&order_id);
                return;
            };
            let read_from = Instant::now();
            let read = client
                .get(format!("{base}/v1/orders/{order_id}?min_position={position}"))
                .header("authorization", &auth)
                .send()
                .await;
            if matches!(&read, Ok(r) if r.status().is_success()) {
                let us = read_from.elapsed().as_micros().max(1) as u64;
                let _ = reads.lock().unwrap_or_else(|e| e.into_inner()).record(us);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let orders: HashSet<String> = sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();

    // Drain: until the healthy endpoint has every order, and the flaky one too (or time).
    let has_all = |r: &Receiver| {
        let received = r.received.lock().unwrap_or_else(|e| e.into_inner());
        let got: HashSet<&String> = received.order_of.values().collect();
        orders.iter().filter(|o| got.contains(o)).count()
    };
    let drain = if args.without_endpoints {
        0
    } else {
        args.drain
    };
    let drain_end = Instant::now() + Duration::from_secs(drain);
    let mut healthy_done_after = None;
    let drain_start = Instant::now();
    while Instant::now() < drain_end {
        let h = has_all(&healthy);
        if h == orders.len() && healthy_done_after.is_none() {
            healthy_done_after = Some(drain_start.elapsed());
        }
        if h == orders.len() && has_all(&flaky) == orders.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut latency = histogram()?;
    let (mut duplicates, mut ids) = (0u64, HashSet::new());
    {
        let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
        let received = healthy.received.lock().unwrap_or_else(|e| e.into_inner());
        for (id, (at, times)) in &received.first {
            if *times > 1 {
                duplicates += 1;
            }
            let Some(order) = received.order_of.get(id) else {
                continue;
            };
            if !ids.insert(order.clone()) {
                duplicates += 1; // the same order under a second webhook-id
            }
            if let Some(started) = sent.get(order) {
                let us = at.saturating_duration_since(*started).as_micros().max(1) as u64;
                let _ = latency.record(us);
            }
        }
    }
    let reads = reads.lock().unwrap_or_else(|e| e.into_inner());
    if args.without_endpoints {
        say!(
            "load: {} orders in {} s ({}/s target), no endpoints, {} commands or reads failed",
            orders.len(),
            args.duration,
            args.rate,
            failed.load(Ordering::Relaxed)
        );
        say!(
            "read-your-writes: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} reads)",
            ms(&reads, 0.5),
            ms(&reads, 0.99),
            reads.max() as f64 / 1000.0,
            reads.len()
        );
        return Ok(());
    }
    let healthy_got = has_all(&healthy);
    let flaky_got = has_all(&flaky);
    say!(
        "load: {} orders in {} s ({}/s target), {} commands or reads failed",
        orders.len(),
        args.duration,
        args.rate,
        failed.load(Ordering::Relaxed)
    );
    say!(
        "healthy endpoint: {healthy_got} of {} events, {duplicates} delivered more than once; delivery latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms (from the command's send){}",
        orders.len(),
        ms(&latency, 0.5),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0,
        healthy_done_after.map_or(String::new(), |d| format!("; all in {:.1} s after the load", d.as_secs_f64()))
    );
    say!(
        "flaky endpoint: {flaky_got} of {} events received after {} requests (the rest wait for their retry)",
        orders.len(),
        flaky.requests.load(Ordering::SeqCst)
    );
    say!(
        "read-your-writes: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} reads)",
        ms(&reads, 0.5),
        ms(&reads, 0.99),
        reads.max() as f64 / 1000.0,
        reads.len()
    );
    let exactly_once = healthy_got == orders.len() && duplicates == 0;
    say!(
        "verdict: healthy p99 {} 1 s, every event to it exactly once: {}, flaky got every event: {}",
        if ms(&latency, 0.99) < 1000.0 { "<" } else { "≥" },
        if exactly_once { "yes" } else { "no" },
        if flaky_got == orders.len() { "yes" } else { "not yet" }
    );
    Ok(())
}
