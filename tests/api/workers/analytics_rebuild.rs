//! Analytics recomputed from the whole log on the bulk path, beside the live worker on real
//! JetStream: equal to what the worker counts live, every event counted once whichever side
//! of the swap it falls, and the live tables serving whatever happens to the recompute.
//! Streams, prefixes and consumers are the test's own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo::ProcessRole;
use ordo_api::Role::Analyst;
use ordo_workers::analytics::{self, RebuildError, Rebuilt};
use ordo_workers::{Worker, WorkerRunner};
use tokio::sync::watch;

use crate::helpers::{eventually, spawn_app_with, TestApp};
use crate::nats::{setup, work_until, Setup};

/// Every row of the three tables, as text, in order.
pub async fn tables(app: &TestApp) -> (Vec<String>, Vec<String>, Vec<String>) {
    let sales = sqlx::query_scalar(
        "SELECT concat_ws(' ', granularity, bucket, currency, channel, orders, gross, paid, refunded)
           FROM analytics.sales ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let stages = sqlx::query_scalar(
        "SELECT concat_ws(' ', order_id, stage, channel) FROM analytics.order_stages ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let funnel: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', channel, stage, orders) FROM analytics.funnel ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // The funnel is the stages' count, kept as they are recorded.
    let counted: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', channel, stage, count(*)) FROM analytics.order_stages
          GROUP BY channel, stage ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(funnel, counted, "the funnel against the stages it counts");
    (sales, stages, funnel)
}

/// Orders placed and gross sales over every day, as the API answers them.
pub async fn totals(app: &TestApp) -> (i64, i64) {
    let funnel = app.get(Analyst, "/v1/analytics/funnel").await;
    funnel.assert_status(200);
    let sales = app
        .get(Analyst, "/v1/analytics/sales?granularity=day")
        .await;
    sales.assert_status(200);
    let gross = sales.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["gross"].as_i64().unwrap())
        .sum();
    (funnel.body["placed"].as_i64().unwrap(), gross)
}

/// Publish everything and let the worker handle every event.
pub async fn settle(app: &TestApp, s: &Setup, runner: &WorkerRunner) {
    s.publish_all(app).await;
    work_until(
        runner,
        app,
        "SELECT count(*) FROM analytics.processed",
        app.event_count().await,
    )
    .await;
}

/// Recompute, waiting out a killed recompute's session (its lock goes with it).
pub async fn recompute(app: &TestApp, batch_size: i64) -> Rebuilt {
    let (_stop, stopped) = watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match analytics::rebuild(&app.pool, batch_size, &stopped, |_| {}).await {
            Err(RebuildError::Busy) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            result => return result.unwrap(),
        }
    }
}

pub async fn worker(app: &TestApp, s: &Setup) -> WorkerRunner {
    WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
        .await
        .unwrap()
}

/// An application whose `shops` × [`TestApp::paid_and_cancelled_orders`] the live worker
/// has counted.
async fn counted_live(shops: usize) -> (TestApp, Setup, WorkerRunner) {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    for _ in 0..shops {
        app.paid_and_cancelled_orders().await;
    }
    let s = setup(&app).await;
    let runner = worker(&app, &s).await;
    settle(&app, &s, &runner).await;
    (app, s, runner)
}

#[tokio::test]
async fn a_recompute_from_zero_equals_what_the_worker_counted_live() {
    let (app, s, _runner) = counted_live(3).await;
    let live = tables(&app).await;
    assert_eq!(totals(&app).await, (6, 6 * 2999));

    // A secondary index of the live table, which the recompute builds once after its load.
    sqlx::query("CREATE INDEX order_stages_by_channel ON analytics.order_stages (channel)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let (_stop, stopped) = watch::channel(false);
    let rebuilt = analytics::rebuild(&app.pool, 7, &stopped, |p| seen.push(p))
        .await
        .unwrap();

    assert_eq!(tables(&app).await, live);
    assert_eq!(rebuilt.events, app.event_count().await);
    assert_eq!(rebuilt.skipped, 0);
    let head: i64 = sqlx::query_scalar("SELECT max(global_position) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rebuilt.counted_through, head);
    assert!(seen.len() > 2, "progress after each batch: {seen:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total), (rebuilt.events, rebuilt.events));
    // The swapped-in tables have the live ones' secondary indexes.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'analytics'
          AND tablename = 'order_stages' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(indexes, ["order_stages_by_channel", "order_stages_pkey"]);
    s.cleanup().await;
}

#[tokio::test]
async fn each_event_is_counted_once_whichever_side_of_the_swap_the_worker_sees_it() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let s = setup(&app).await;
    let runner = worker(&app, &s).await;
    // Counted live before the recompute, then again by the recompute: once in the end.
    app.paid_and_cancelled_orders().await;
    settle(&app, &s, &runner).await;
    // Recorded before the recompute, seen by the worker only after the swap.
    app.paid_and_cancelled_orders().await;
    s.publish_all(&app).await;

    recompute(&app, 5).await;
    assert_eq!(totals(&app).await, (4, 4 * 2999));
    settle(&app, &s, &runner).await;
    assert_eq!(
        totals(&app).await,
        (4, 4 * 2999),
        "the worker skipped what was recomputed"
    );

    // Recorded after the swap: the worker counts it.
    app.paid_and_cancelled_orders().await;
    settle(&app, &s, &runner).await;
    assert_eq!(totals(&app).await, (6, 6 * 2999));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recompute_during_concurrent_writes_and_a_live_worker_counts_every_event_once() {
    let (app, s, runner) = counted_live(5).await;
    let (app, s, runner) = (Arc::new(app), Arc::new(s), Arc::new(runner));

    // Orders keep coming, and the relay and the worker keep going, while it recomputes.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let customer = app.register_customer().await;
            let mut placed = 0;
            while !done.load(Ordering::Relaxed) || placed < 10 {
                app.place_order(&customer).await;
                placed += 1;
            }
            placed
        })
    };
    let live = {
        let (s, runner, done) = (s.clone(), runner.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                s.relay.step().await.unwrap();
                runner.step(50, Duration::from_millis(20)).await.unwrap();
            }
        })
    };
    let rebuilt = recompute(&app, 3).await;
    done.store(true, Ordering::Relaxed);
    let placed = writer.await.unwrap();
    live.await.unwrap();
    settle(&app, &s, &runner).await;

    let orders = 10 + placed;
    assert_eq!(totals(&app).await, (orders, orders * 2999));
    assert!(rebuilt.counted_through > 0);
    // And equal to a recompute of the whole log now that nothing moves.
    let settled = tables(&app).await;
    recompute(&app, 1000).await;
    assert_eq!(tables(&app).await, settled);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_recompute_leaves_the_live_tables_serving_and_the_next_one_resumes() {
    let (app, s, runner) = counted_live(3).await;
    let live = tables(&app).await;

    // Killed after its second batch: the callback holds the recompute there until the task
    // is aborted, so the kill lands at its next await, mid-load.
    let (at_second, second) = std::sync::mpsc::channel::<()>();
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let pool = app.pool.clone();
    let task = tokio::spawn(async move {
        let (_stop, stopped) = watch::channel(false);
        let mut batches = 0;
        analytics::rebuild(&pool, 4, &stopped, move |_| {
            batches += 1;
            if batches == 2 {
                let _ = at_second.send(());
                let _ = held.recv();
            }
        })
        .await
    });
    tokio::task::spawn_blocking(move || second.recv().unwrap())
        .await
        .unwrap();
    task.abort();
    drop(hold);
    assert!(task.await.unwrap_err().is_cancelled());

    let (position, counted): (Option<i64>, i64) =
        sqlx::query_as("SELECT position, counted_through FROM analytics.rebuild")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(counted, 0, "nothing was swapped in");
    let position = position.unwrap();
    assert!(position > 0);
    assert_eq!(tables(&app).await, live);
    assert_eq!(totals(&app).await, (6, 6 * 2999));
    // The worker goes on counting into the live tables.
    app.paid_and_cancelled_orders().await;
    settle(&app, &s, &runner).await;
    assert_eq!(totals(&app).await, (8, 8 * 2999));

    let rebuilt = recompute(&app, 4).await;
    assert_eq!(rebuilt.resumed_from, position);
    assert_eq!(totals(&app).await, (8, 8 * 2999));
    s.cleanup().await;
}

/// A transaction that read a live table and stays open (an analyst's long report) does not
/// stall the analytics reads when a recompute comes to its swap: the swap waits only a
/// moment for the table, gives up, and is tried again until the reader is done. Before, its
/// wait for the table's exclusive lock lasted as long as the reader, every read behind it.
#[tokio::test]
async fn a_long_reader_of_a_live_table_defers_the_swap_and_holds_up_no_read() {
    let (app, s, _runner) = counted_live(1).await;
    let live = tables(&app).await;
    let mut report = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query("SELECT count(*) FROM analytics.sales")
        .execute(&mut *report)
        .await
        .unwrap();

    let pool = app.pool.clone();
    let task = tokio::spawn(async move {
        let (_stop, stopped) = watch::channel(false);
        analytics::rebuild(&pool, 7, &stopped, |_| {}).await
    });
    // The swap has asked for the table the reader holds.
    eventually(
        Duration::from_secs(30),
        "the recompute came to its swap",
        async || {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_locks
                                 WHERE NOT granted AND relation = 'analytics.sales'::regclass)",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap()
        },
    )
    .await;
    let read = tokio::time::timeout(Duration::from_secs(10), totals(&app))
        .await
        .expect("analytics answer while the reader holds the table");
    assert_eq!(read, (2, 2 * 2999));
    assert!(
        !task.is_finished(),
        "no swap while the reader holds the table"
    );

    report.rollback().await.unwrap();
    let rebuilt = task.await.unwrap().unwrap();
    assert_eq!(rebuilt.events, app.event_count().await);
    assert_eq!(tables(&app).await, live);
    s.cleanup().await;
}

/// A recompute in batches of two that fails half-way through its load, on a check the live
/// rows were never held to, which the shadow tables (made like the live ones) enforce: the
/// second order's sum breaks it. Returns its error and the batches it had written.
async fn fail_a_recompute_half_way(app: &TestApp) -> (RebuildError, usize) {
    sqlx::query("ALTER TABLE analytics.sales ADD CONSTRAINT small CHECK (gross < 3000) NOT VALID")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_stop, stopped) = watch::channel(false);
    let mut batches = 0;
    let error = analytics::rebuild(&app.pool, 2, &stopped, |_| batches += 1)
        .await
        .unwrap_err();
    (error, batches)
}

/// Drop the check [`fail_a_recompute_half_way`] added, from the live and the shadow table.
async fn drop_the_failing_check(app: &TestApp) {
    for table in ["analytics", "analytics_rebuild"] {
        sqlx::query(&format!("ALTER TABLE {table}.sales DROP CONSTRAINT small"))
            .execute(&app.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_failed_recompute_leaves_the_live_tables_serving_and_resumes_once_fixed() {
    let (app, s, _runner) = counted_live(1).await;
    let live = tables(&app).await;

    let (error, batches) = fail_a_recompute_half_way(&app).await;
    assert!(error.to_string().contains("small"), "{error}");
    assert!(batches > 0, "it failed half-way, not at once");

    assert_eq!(tables(&app).await, live);
    assert_eq!(totals(&app).await, (2, 2 * 2999));
    let (position, counted): (Option<i64>, i64) =
        sqlx::query_as("SELECT position, counted_through FROM analytics.rebuild")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(counted, 0, "nothing was swapped in");

    // Fixed, the next recompute resumes where the failed one stopped and ends equal.
    drop_the_failing_check(&app).await;
    let rebuilt = recompute(&app, 2).await;
    assert_eq!(Some(rebuilt.resumed_from), position);
    assert!(rebuilt.resumed_from > 0);
    assert_eq!(tables(&app).await, live);
    s.cleanup().await;
}

/// A recompute interrupted under a version with fewer analytics tables (before the funnel
/// was kept as a table) left shadow tables the next one cannot complete: it starts over, and
/// ends equal to what the worker counted.
#[tokio::test]
async fn a_recompute_left_without_every_shadow_table_starts_over() {
    let (app, s, _runner) = counted_live(1).await;
    let live = tables(&app).await;
    fail_a_recompute_half_way(&app).await;
    let position: Option<i64> = sqlx::query_scalar("SELECT position FROM analytics.rebuild")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(position.is_some_and(|p| p > 0), "interrupted half-way");
    drop_the_failing_check(&app).await;
    sqlx::query("DROP TABLE analytics_rebuild.funnel")
        .execute(&app.pool)
        .await
        .unwrap();

    let rebuilt = recompute(&app, 2).await;
    assert_eq!(rebuilt.resumed_from, 0);
    assert_eq!(tables(&app).await, live);
    s.cleanup().await;
}

/// A worker's batch reads by index, and its statements are never compiled with JIT. The
/// batch prices a sequential scan out (`enable_seqscan = off`), and a statement that has no
/// index to use, such as the live batch's read of the one `analytics.rebuild` row, then
/// costs past `jit_above_cost`: PostgreSQL compiled it with LLVM at every batch, 24 ms each
/// on average under load.
#[tokio::test]
async fn a_workers_batch_reads_by_index_and_compiles_nothing() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let mut tx = ordo_commands::db::begin_by_index(&app.pool).await.unwrap();
    let seqscan: String = sqlx::query_scalar("SELECT current_setting('enable_seqscan')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seqscan, "off");
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT counted_through FROM analytics.rebuild FOR KEY SHARE",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(plan[0].get("JIT").is_none(), "compiled with JIT: {plan}");
    tx.rollback().await.unwrap();
}
