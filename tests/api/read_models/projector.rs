//! The feed and the projection runner against real PostgreSQL: late commits never skipped,
//! crashes mid-batch, one active runner with failover, rebuilds under load, poison events.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ordo::ProcessRole;
use ordo_api::Role::{Analyst, Storefront};
use ordo_commands::feed::{self, Checkpoint};
use ordo_commands::privacy::Keyring;
use ordo_projections::{check, status, Projection, Runner, RunnerConfig, SharedFeed, Step};
use serde_json::json;
use sqlx::Connection;
use tokio::sync::watch;

use crate::helpers::{rows_scanned, spawn_app, spawn_app_with, TestApp};

/// Append a bare event of a type no projection reads, inside `tx`.
async fn append_raw(tx: &mut sqlx::PgConnection, stream: &str, sequence: i64) {
    sqlx::query(
        "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('probe', $1, $2, 'probe.written', '1', '{}', '{}')",
    )
    .bind(stream)
    .bind(sequence)
    .execute(tx)
    .await
    .unwrap();
}

/// Positions are handed out in commit order: a transaction that appends holds the commit
/// point until it ends, so a second writer (here a raw INSERT, as any writer would) waits
/// for it and takes the next position. The feed can never see a position below one it has
/// already passed.
#[tokio::test]
async fn a_writer_holds_the_commit_point_until_it_ends_so_positions_follow_commits() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = app.pool.clone();

    let mut slow = ordo_commands::db::begin(&pool).await.unwrap();
    append_raw(&mut slow, "slow", 1).await;
    let fast = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut fast = ordo_commands::db::begin(&pool).await.unwrap();
            append_raw(&mut fast, "fast", 1).await;
            fast.commit().await.unwrap();
        }
    });
    // The second writer waits on the commit point's lock (not a guess at timing: asked of
    // PostgreSQL).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the second writer never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !fast.is_finished(),
        "the second writer went past the commit point"
    );
    let mut conn = pool.acquire().await.unwrap();
    let seen = feed::read_batch(&mut conn, Checkpoint::default(), 100)
        .await
        .unwrap();
    assert!(seen.is_empty(), "nothing is committed yet");

    slow.commit().await.unwrap();
    fast.await.unwrap();
    let seen = feed::read_batch(&mut conn, Checkpoint::default(), 100)
        .await
        .unwrap();
    let streams: Vec<&str> = seen.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(streams, ["slow", "fast"], "positions in commit order");
    assert!(seen[0].checkpoint < seen[1].checkpoint);
}

/// A write transaction left open anywhere on the server (this database or another) does not
/// hold the feed back: events committed meanwhile are read at once.
#[tokio::test]
async fn a_transaction_left_open_on_the_server_does_not_hold_the_feed_back() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = app.pool.clone();
    let mut other_db =
        sqlx::PgConnection::connect(&format!("{}/postgres", crate::helpers::postgres_base()))
            .await
            .unwrap();
    sqlx::query("BEGIN").execute(&mut other_db).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut other_db)
        .await
        .unwrap();
    let mut here = ordo_commands::db::begin(&pool).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *here)
        .await
        .unwrap();

    let mut tx = ordo_commands::db::begin(&pool).await.unwrap();
    append_raw(&mut tx, "committed", 1).await;
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let seen = feed::read_batch(&mut conn, Checkpoint::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        seen.len(),
        1,
        "the committed event is readable while others stay open"
    );

    here.rollback().await.unwrap();
    sqlx::query("ROLLBACK")
        .execute(&mut other_db)
        .await
        .unwrap();
}

#[tokio::test]
async fn interleaved_delayed_writers_are_read_once_each_in_commit_order() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = app.pool.clone();
    let writers = 12;
    let per_writer = 8;

    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut after = Checkpoint::default();
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < writers * per_writer {
                assert!(
                    Instant::now() < deadline,
                    "reader starved at {}",
                    seen.len()
                );
                for e in feed::read_batch(&mut conn, after, 7).await.unwrap() {
                    assert!(e.checkpoint > after, "strictly increasing checkpoints");
                    after = e.checkpoint;
                    seen.push((e.aggregate_id.clone(), e.sequence));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            seen
        })
    };
    let writes = (0..writers).map(|w| {
        let pool = pool.clone();
        async move {
            for seq in 1..=per_writer as i64 {
                let mut tx = ordo_commands::db::begin(&pool).await.unwrap();
                append_raw(&mut tx, &format!("w{w}"), seq).await;
                // Hold some transactions open while others commit.
                tokio::time::sleep(Duration::from_millis(
                    ((w * 7 + seq as usize * 13) % 40) as u64,
                ))
                .await;
                tx.commit().await.unwrap();
            }
        }
    });
    join_all(writes).await;
    let seen = reader.await.unwrap();

    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        writers * per_writer,
        "no event skipped or repeated"
    );
    assert_eq!(seen.len(), writers * per_writer);
    for w in 0..writers {
        let mine: Vec<i64> = seen
            .iter()
            .filter(|(s, _)| *s == format!("w{w}"))
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(
            mine,
            (1..=per_writer as i64).collect::<Vec<_>>(),
            "a stream's events in order"
        );
    }
}

/// A scenario of orders and payments, written over HTTP.
pub(crate) async fn write_scenario(app: &TestApp, orders: usize) {
    let customer = app.register_customer().await;
    for i in 0..orders {
        let order = app.place_order(&customer).await;
        app.confirm(&order).await;
        let payment = app.authorized_payment(&order, 2999).await;
        if i % 3 == 0 {
            // Void first: cancelling would have the process manager void it, racing us.
            app.post(
                Storefront,
                &format!("/v1/payments/{payment}/void"),
                json!({}),
            )
            .await
            .assert_status(200);
            app.post(
                Storefront,
                &format!("/v1/orders/{order}/cancel"),
                json!({"reason": "r"}),
            )
            .await
            .assert_status(200);
        } else {
            app.capture(&payment, 2999).await;
            if i % 3 == 1 {
                app.refund(&payment, 99, "r").await;
            }
        }
    }
}

pub(crate) fn fast() -> RunnerConfig {
    RunnerConfig {
        batch_size: 3,
        rebuild_batch_size: 5,
        poll: Duration::from_millis(50),
        heartbeat: Duration::from_millis(100),
    }
}

pub(crate) async fn wait_until_caught_up(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for projection in Projection::ALL {
        let position = app.last_position();
        while !status::reached(&app.pool, projection, position)
            .await
            .unwrap()
        {
            if Instant::now() >= deadline {
                // What holds it up: its status, and the sessions waiting or holding a
                // transaction open.
                let status = status::all(&app.pool).await.unwrap();
                let sessions: Vec<String> = sqlx::query_scalar(
                    "SELECT format('%s %s %s: %s', pid, state, wait_event, left(query, 120))
                           FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid()
                            AND (wait_event_type = 'Lock' OR state LIKE 'idle in transaction%')",
                )
                .fetch_all(&app.pool)
                .await
                .unwrap();
                panic!("{projection:?} did not catch up to {position}: {status:#?}\n{sessions:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// Killing runners abandons transactions at any point, BEGIN included: this once left a
// pooled connection inside a transaction nobody ended, and a runner blocked behind its locks
// for good (`ordo_commands::db::begin`).
#[tokio::test]
async fn runners_killed_mid_batch_leave_read_models_equal_to_the_fold() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    write_scenario(&app, 9).await;

    // Start and kill runners at arbitrary moments, many times.
    for round in 0..12u64 {
        let (_stop, stopped) = watch::channel(false);
        let tasks: Vec<_> = Projection::ALL
            .into_iter()
            .map(|p| tokio::spawn(Runner::new(app.pool.clone(), p, fast()).run(stopped.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(5 + round * 7 % 30)).await;
        for t in tasks {
            t.abort();
        }
    }
    let (stop, stopped) = watch::channel(false);
    let tasks: Vec<_> = Projection::ALL
        .into_iter()
        .map(|p| tokio::spawn(Runner::new(app.pool.clone(), p, fast()).run(stopped.clone())))
        .collect();
    wait_until_caught_up(&app).await;
    let mismatches = check::check(&app.pool).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every read model's tables prepared, a feed to share, and a maker of runners of
/// `batch_size` that share it.
async fn sharing_runners(
    pool: &sqlx::PgPool,
    batch_size: i64,
) -> (SharedFeed, impl Fn(Projection) -> Runner) {
    for projection in Projection::ALL {
        ordo_projections::runner::prepare(pool, projection)
            .await
            .unwrap();
    }
    let shared = SharedFeed::new(pool, Keyring::new(pool.clone(), None));
    let config = RunnerConfig {
        batch_size,
        ..fast()
    };
    let (pool, feed) = (pool.clone(), shared.clone());
    let runner = move |projection| {
        Runner::new(pool.clone(), projection, config.clone()).with_shared_feed(feed.clone())
    };
    (shared, runner)
}

/// Every read model has reached `head`, and holds what a fold of the log gives.
async fn assert_every_read_model_at(pool: &sqlx::PgPool, head: i64) {
    for projection in Projection::ALL {
        assert!(
            status::reached(pool, projection, head).await.unwrap(),
            "{projection:?} has not reached {head}"
        );
    }
    let mismatches = check::check(pool).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// The runners of one process read each batch once between them: the first to step reads
/// it, the others apply it (from their own checkpoint, where that falls inside it), and the
/// read models are what a fold of the log gives.
#[tokio::test]
async fn runners_sharing_the_feed_read_each_batch_once_and_build_the_folds_read_models() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    write_scenario(&app, 4).await;
    let pool = app.pool.clone();
    let (shared, runner) = sharing_runners(&pool, 1000).await;
    // Payments first moves a little on its own, so that its checkpoint lies inside the batch
    // the others will read.
    let alone = Runner::new(pool.clone(), Projection::Payments, fast());
    assert_eq!(alone.step(3).await.unwrap(), Step::Applied(3));
    let events = app.event_count().await as usize;
    assert_eq!(
        runner(Projection::Orders).step(1000).await.unwrap(),
        Step::Applied(events)
    );
    assert_eq!(
        runner(Projection::Payments).step(1000).await.unwrap(),
        Step::Applied(events - 3),
        "payments applies the rest of the batch after its own checkpoint"
    );
    assert_eq!(
        runner(Projection::Customers).step(1000).await.unwrap(),
        Step::Applied(events)
    );
    assert_eq!(shared.reads(), 1, "one read of the log for the three");

    // New events: a new batch, read once again.
    write_scenario(&app, 1).await;
    for projection in [
        Projection::Customers,
        Projection::Orders,
        Projection::Payments,
    ] {
        assert!(matches!(
            runner(projection).step(1000).await.unwrap(),
            Step::Applied(n) if n > 0
        ));
    }
    assert_eq!(shared.reads(), 2);
    let head = app.last_position();
    assert_every_read_model_at(&pool, head).await;
}

/// Under a steady flow, commits land between the runners' steps. A runner whose checkpoint
/// falls inside the last batch applies its rest and reads from the log only what was
/// committed after it; the next runner shares the grown batch. Each event is read once.
#[tokio::test]
async fn runners_stepping_between_commits_read_only_what_the_batch_lacks() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    write_scenario(&app, 4).await;
    let pool = app.pool.clone();
    let (shared, runner) = sharing_runners(&pool, 1000).await;
    // Payments and customers first move a little on their own.
    for projection in [Projection::Payments, Projection::Customers] {
        let alone = Runner::new(pool.clone(), projection, fast());
        assert_eq!(alone.step(3).await.unwrap(), Step::Applied(3));
    }
    let before = app.event_count().await as usize;
    assert_eq!(
        runner(Projection::Orders).step(1000).await.unwrap(),
        Step::Applied(before)
    );

    // Commits after the orders runner's read, known to this process.
    write_scenario(&app, 2).await;
    let head = app.last_position();
    feed::KnownHead::of(&pool).raise(head);
    let after = app.event_count().await as usize;
    assert!(after > before);
    assert_eq!(
        runner(Projection::Payments).step(1000).await.unwrap(),
        Step::Applied(after - 3),
        "the batch's rest after payments' checkpoint, and the new events"
    );
    assert_eq!(
        runner(Projection::Customers).step(1000).await.unwrap(),
        Step::Applied(after - 3)
    );
    assert_eq!(
        runner(Projection::Orders).step(1000).await.unwrap(),
        Step::Applied(after - before)
    );
    assert_eq!(shared.reads(), 2, "the first batch, then what it lacked");
    assert_eq!(shared.events_read(), after as u64, "each event read once");
    assert_every_read_model_at(&pool, head).await;
}

/// Small batches, commits between every round of steps: a grown batch never hands a runner
/// more than its batch size, and the read models end as a fold of the log gives them.
#[tokio::test]
async fn a_grown_shared_batch_never_hands_a_runner_more_than_its_batch_size() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = app.pool.clone();
    const LIMIT: i64 = 4;
    let (shared, runner) = sharing_runners(&pool, LIMIT).await;
    // A batch grown past LIMIT: orders reads four events, payments (one event on) grows the
    // batch by one, and customers, at the batch's start, gets four of its five.
    write_scenario(&app, 1).await;
    feed::KnownHead::of(&pool).raise(app.last_position());
    let alone = Runner::new(pool.clone(), Projection::Payments, fast());
    assert_eq!(alone.step(1).await.unwrap(), Step::Applied(1));
    for projection in Projection::ALL {
        assert_eq!(
            runner(projection).step(LIMIT).await.unwrap(),
            Step::Applied(LIMIT as usize),
            "{projection:?}"
        );
    }
    assert_eq!(shared.events_read(), LIMIT as u64 + 1);

    let mut applied = 0;
    for _ in 0..4 {
        write_scenario(&app, 1).await;
        feed::KnownHead::of(&pool).raise(app.last_position());
        for projection in Projection::ALL {
            match runner(projection).step(LIMIT).await.unwrap() {
                Step::Applied(n) => {
                    assert!(n as i64 <= LIMIT, "{projection:?} applied {n} events");
                    applied += n;
                }
                step => panic!("{projection:?}: {step:?}"),
            }
        }
    }
    assert!(applied > 0);
    let head = app.last_position();
    for projection in Projection::ALL {
        while let Step::Applied(n) = runner(projection).step(LIMIT).await.unwrap() {
            assert!(n as i64 <= LIMIT);
        }
    }
    assert_every_read_model_at(&pool, head).await;
}

/// Every reader of a process waits on one LISTEN connection: a notification from another
/// process (here a plain NOTIFY) raises the known head they all wait on, and one without a
/// position wakes them too.
#[tokio::test]
async fn the_readers_of_a_process_share_one_listener_that_wakes_them_all() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = app.pool.clone();
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(feed::Wakeup::new(&pool));
    }
    let listening = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND query ILIKE 'LISTEN%ordo_events%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // The listener connects in the background: wait for it, then make sure it is alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening().await == 0 {
        assert!(Instant::now() < deadline, "no listener connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listening().await, 1, "one LISTEN for the three readers");
    // Connecting nudges every reader (what was sent before is unknown), even one that was
    // not waiting yet.
    for reader in &mut readers {
        let head = reader.known_head();
        assert!(reader.wait_beyond(head, Duration::from_secs(20)).await);
        assert_eq!(reader.known_head(), head, "woken by the nudge alone");
    }

    let seen = readers[0].known_head();
    let woken = join_all(
        readers
            .iter_mut()
            .map(|reader| async { reader.wait_beyond(seen, Duration::from_secs(20)).await }),
    );
    let notify = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sqlx::query("SELECT pg_notify('ordo_events', $1)")
            .bind((seen + 1_000_000).to_string())
            .execute(&pool)
            .await
            .unwrap();
    };
    let (woken, ()) = tokio::join!(woken, notify);
    assert_eq!(
        woken,
        vec![true; 3],
        "each woken by the notification, not the poll"
    );
    assert_eq!(readers[1].known_head(), seen + 1_000_000);

    // A notification without a position wakes a reader that has read everything known.
    let head = readers[2].known_head();
    let reader = &mut readers[2];
    let (woken, ()) = tokio::join!(reader.wait_beyond(head, Duration::from_secs(20)), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sqlx::query("SELECT pg_notify('ordo_events', '')")
            .execute(&pool)
            .await
            .unwrap();
    });
    assert!(woken);
}

#[tokio::test]
async fn only_one_runner_leads_and_a_standby_takes_over_when_it_dies() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (_stop, stopped) = watch::channel(false);
    let first = tokio::spawn(
        Runner::new(app.pool.clone(), Projection::Orders, fast())
            .with_id("first")
            .run(stopped.clone()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(
        Runner::new(app.pool.clone(), Projection::Orders, fast())
            .with_id("second")
            .run(stopped.clone()),
    );

    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await
        .assert_status(200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(
        s.runner.as_deref(),
        Some("first"),
        "the first runner leads; the second stands by"
    );

    first.abort();
    let _ = first.await;
    let order2 = app.place_order(&customer).await;
    let read = app
        .get_fresh(Storefront, &format!("/v1/orders/{order2}"))
        .await;
    read.assert_status(200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(s.runner.as_deref(), Some("second"), "the standby took over");
    second.abort();
}

#[tokio::test]
async fn a_rebuild_under_concurrent_writes_ends_identical_to_the_fold() {
    let app = spawn_app().await;
    write_scenario(&app, 12).await;
    wait_until_caught_up(&app).await;

    let resp = app
        .post(Analyst, "/v1/projections/customers/rebuild", json!({}))
        .await;
    resp.assert_status(202);
    assert_eq!(resp.body["requested"], true);
    for name in ["orders", "payments"] {
        app.post(
            Analyst,
            &format!("/v1/projections/{name}/rebuild"),
            json!({}),
        )
        .await
        .assert_status(202);
    }
    // Writes go on while the copies are built; reads keep being served.
    let customer = app.register_customer().await;
    for _ in 0..6 {
        let order = app.place_order(&customer).await;
        app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
            .await
            .assert_status(200);
        app.get(Analyst, "/v1/projections").await.assert_status(200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = status::all(&app.pool).await.unwrap();
        if all.iter().all(|s| s.rebuild.is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "rebuild did not finish: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until_caught_up(&app).await;
    let mismatches = check::check(&app.pool).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    let view = app
        .get_fresh(Storefront, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(view.body["order_count"], 6);
}

#[tokio::test]
async fn a_poison_event_stops_only_its_projection_at_its_position() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    // An event the orders projection cannot place: a confirmation for an order never placed.
    let ghost = uuid::Uuid::new_v4();
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('order', $1, 2, 'order.confirmed', '1', $2, '{}') RETURNING global_position",
    )
    .bind(ghost.to_string())
    .bind(json!({"type": "order.confirmed", "order_id": ghost, "customer_id": ghost, "confirmed_at": "2026-01-01T00:00:00Z"}))
    .fetch_one(&app.pool)
    .await
    .unwrap();

    // The other projections go on.
    let payment = app.payment(&order, 2999).await;
    app.get_fresh(Storefront, &format!("/v1/payments/{payment}"))
        .await
        .assert_status(200);

    let deadline = Instant::now() + Duration::from_secs(10);
    let orders = loop {
        let s = status::one(&app.pool, Projection::Orders).await.unwrap();
        if s.error_position == Some(position) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "orders did not stop at the poison event: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(orders.state, "failed");
    assert!(orders
        .last_error
        .as_deref()
        .unwrap()
        .contains("before order.placed"));
    assert!(
        orders.position < position,
        "it did not advance past the poison event"
    );
    let api = app.get(Analyst, "/v1/projections").await;
    assert_eq!(api.body["items"][0]["state"], "failed");
    assert_eq!(api.body["items"][1]["state"], "running");
}

#[tokio::test]
async fn a_stopped_projection_resumes_once_the_cause_is_fixed() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await
        .assert_status(200);
    // Every read model up to here, so that the payment is the first event the payments
    // runner reads next (a batch that fails is recorded at its first event, before the
    // runner narrows it down one event at a time).
    wait_until_caught_up(&app).await;
    // Break the payments read model so that it cannot take a payment of 2999.
    sqlx::query("ALTER TABLE projections.payments ADD CONSTRAINT small CHECK (amount < 1000)")
        .execute(&app.pool)
        .await
        .unwrap();
    let payment = app.payment(&order, 2999).await;
    let position = app.last_position();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status::one(&app.pool, Projection::Payments).await.unwrap();
        if s.last_error.is_some() {
            assert_eq!(s.error_position, Some(position));
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The orders projection took the same event.
    app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await
        .assert_status(200);

    sqlx::query("ALTER TABLE projections.payments DROP CONSTRAINT small")
        .execute(&app.pool)
        .await
        .unwrap();
    let read = app
        .get_fresh(Storefront, &format!("/v1/payments/{payment}"))
        .await;
    read.assert_status(200);
    assert_eq!(read.body["amount"], 2999);
    let s = status::one(&app.pool, Projection::Payments).await.unwrap();
    assert_eq!(s.last_error, None);
}

#[tokio::test]
async fn the_consistency_check_finds_a_tampered_read_model() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    wait_until_caught_up(&app).await;
    assert!(check::check(&app.pool).await.unwrap().is_empty());
    sqlx::query("UPDATE projections.orders SET total = 1 WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&order).unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let mismatches = check::check(&app.pool).await.unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:#?}");
    assert_eq!(mismatches[0].table, "orders");
    assert_eq!(mismatches[0].field, "total");
}

/// Preparing a read model whose tables and indexes are all there takes no lock on them, so
/// it never waits behind a VACUUM or ANALYZE (their lock, held open here), nor holds up the
/// read model's writes that would queue behind it; an index that is missing is created.
#[tokio::test]
async fn preparing_a_read_model_waits_for_no_vacuum_and_creates_what_is_missing() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let prepare = || ordo_projections::runner::prepare(&app.pool, Projection::Orders);
    prepare().await.unwrap();

    let mut vacuum = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query(
        "LOCK TABLE projections.orders, projections.order_payments IN SHARE UPDATE EXCLUSIVE MODE",
    )
    .execute(&mut *vacuum)
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), prepare())
        .await
        .expect("prepared within 10 s while a vacuum's lock is held")
        .unwrap();
    vacuum.rollback().await.unwrap();

    sqlx::query("DROP INDEX projections.orders_by_channel")
        .execute(&app.pool)
        .await
        .unwrap();
    prepare().await.unwrap();
    let index: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('projections.orders_by_channel')::text")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(index.as_deref(), Some("projections.orders_by_channel"));
}

/// Processes that prepare a fresh database at the same moment (two started together, or a
/// runner beside a rebuild) all succeed, and the tables are there once: without the lock
/// around the DDL the slower `CREATE TABLE IF NOT EXISTS` failed on the catalog's unique index.
#[tokio::test]
async fn read_models_prepared_at_once_on_a_fresh_database_all_succeed() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let relations: Vec<String> = Projection::ALL
        .iter()
        .flat_map(|p| p.relations(ordo_projections::model::LIVE))
        .collect();
    for _ in 0..3 {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.oid::regclass::text FROM unnest($1::text[]) AS r (name)
               JOIN pg_class c ON c.oid = to_regclass(r.name) WHERE c.relkind = 'r'",
        )
        .bind(&relations)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert!(!tables.is_empty());
        sqlx::raw_sql(&format!("DROP TABLE {} CASCADE", tables.join(", ")))
            .execute(&app.pool)
            .await
            .unwrap();

        let preparations = (0..6).flat_map(|_| {
            Projection::ALL.map(|projection| {
                let pool = app.pool.clone();
                tokio::spawn(
                    async move { ordo_projections::runner::prepare(&pool, projection).await },
                )
            })
        });
        for result in join_all(preparations).await {
            result.unwrap().expect("every preparation succeeds");
        }
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM unnest($1::text[]) AS r (name) WHERE to_regclass(name) IS NULL",
        )
        .bind(&relations)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert!(missing.is_empty(), "missing after preparing: {missing:?}");
    }
}

/// A read model's look-up by key, first planned while its table held a few rows, still reads
/// by index once the table has grown. PostgreSQL keeps a statement's cached plan until the
/// table is analyzed, and where no autovacuum runs nothing analyzes it: without the batch's
/// `enable_seqscan = off`, the plan made for batches of ten among sixty customers (a
/// sequential scan, rightly then) read all 20,000 rows again for every batch.
#[tokio::test]
async fn a_read_model_that_grew_is_still_read_by_index() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    // One connection, so that the runner's statements are all cached on it.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.database_url)
        .await
        .unwrap();
    let runner = Runner::new(one.clone(), Projection::Customers, fast());
    for _ in 0..60 {
        app.register_customer().await;
    }
    // Six batches: after five, PostgreSQL settles on a plan it caches.
    for _ in 0..6 {
        assert_eq!(runner.step(10).await.unwrap(), Step::Applied(10));
    }

    sqlx::query(
        "INSERT INTO projections.customers (id, order_count, cancelled_count, open_orders, notes_count)
         SELECT gen_random_uuid(), 0, 0, 0, 0 FROM generate_series(1, 20000)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for _ in 0..10 {
        app.register_customer().await;
    }
    let before = rows_scanned(&one, "projections.customers").await;
    assert_eq!(runner.step(10).await.unwrap(), Step::Applied(10));
    let scanned = rows_scanned(&one, "projections.customers").await - before;
    assert!(
        scanned < 20_000,
        "a batch of ten read {scanned} rows of the customers table by sequential scan"
    );
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM projections.customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(customers, 20_070);
    one.close().await;
}
