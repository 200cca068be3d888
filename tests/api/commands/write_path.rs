//! The group-commit write path: per-append outcomes inside one batch, concurrent writers on
//! one stream, two processes appending while a reader follows the feed, and reads of your
//! writes that no open transaction on the server can hold back.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::future::join_all;
use ordo::ProcessRole;
use ordo_api::Role::{Storefront, Support};
use ordo_commands::appender::{
    self, Answer, Append, Appended, Appender, NewEvent, PaymentCap, StreamVersion,
};
use ordo_commands::feed::{self, Checkpoint};
use ordo_commands::EventStore;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{
    order_body, postgres_base, spawn_app_with, spawn_app_without_process_manager, Resp, TestApp,
};

fn probe(id: &str, version: u64, events: usize) -> Append {
    Append {
        stream: StreamVersion {
            aggregate_type: "probe".into(),
            aggregate_id: id.into(),
            version,
        },
        events: (0..events)
            .map(|_| NewEvent::new("probe.written", "1", &json!({}), &json!({})))
            .collect(),
        reads: Vec::new(),
        payment_cap: None,
        owners: Vec::new(),
        answer: None,
    }
}

/// A payment's creation for `order`, capped at `max` payments per order.
fn capped_payment(id: &str, order: &str, max: i64) -> Append {
    Append {
        stream: StreamVersion {
            aggregate_type: "payment".into(),
            aggregate_id: id.into(),
            version: 0,
        },
        events: vec![NewEvent::new(
            "payment.created",
            "1",
            &json!({"order_id": order}),
            &json!({}),
        )],
        reads: Vec::new(),
        payment_cap: Some(PaymentCap {
            order_id: order.into(),
            max,
        }),
        owners: Vec::new(),
        answer: None,
    }
}

#[tokio::test]
async fn in_one_batch_a_stale_append_fails_alone_and_the_others_commit() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let first = appender::commit(&app.pool, &[&probe("moved", 0, 2)])
        .await
        .unwrap();
    assert!(matches!(first[0], Appended::Committed { version: 2, .. }));

    // `moved` is at 2; an append decided at 1 is stale. A read of `moved` at 1 is stale too.
    let mut reading = probe("reader", 0, 1);
    reading.reads.push(StreamVersion {
        aggregate_type: "probe".into(),
        aggregate_id: "moved".into(),
        version: 1,
    });
    let batch = [
        probe("a", 0, 1),
        probe("moved", 1, 1),
        probe("b", 0, 3),
        reading,
        probe("a", 1, 1),
    ];
    let outcomes = appender::commit(&app.pool, &batch.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    assert!(matches!(
        outcomes[0],
        Appended::Committed { version: 1, .. }
    ));
    assert_eq!(
        outcomes[1],
        Appended::Stale {
            own: true,
            stream: "probe/moved".into(),
            actual: 2
        }
    );
    assert!(matches!(
        outcomes[2],
        Appended::Committed { version: 3, .. }
    ));
    assert_eq!(
        outcomes[3],
        Appended::Stale {
            own: false,
            stream: "probe/moved".into(),
            actual: 2
        }
    );
    assert!(
        matches!(outcomes[4], Appended::Committed { version: 2, .. }),
        "a second append to a stream in the same batch follows the first"
    );
    assert_eq!(app.sequences("probe", "a").await, [1, 2]);
    assert_eq!(app.sequences("probe", "b").await, [1, 2, 3]);
    assert_eq!(app.sequences("probe", "moved").await, [1, 2]);
    assert!(app.sequences("probe", "reader").await.is_empty());
    // Positions follow the batch's order, and each answer names its last event.
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let Appended::Committed { position, .. } = outcomes[4] else {
        unreachable!()
    };
    assert_eq!(position, *positions.last().unwrap());
}

/// Whether a customer was erased is decided under the commit point, with the batch: an
/// append carrying an erased customer's personal data is refused alone, and the erasure is
/// seen even by a process that never read the customer's key (as one that cached it before).
#[tokio::test]
async fn in_one_batch_an_append_for_an_erased_customer_fails_alone() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (erased, kept) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    ordo_commands::privacy::Keyring::new(app.pool.clone(), None)
        .erase(erased)
        .await
        .unwrap();
    let mut for_erased = probe("for-erased", 0, 1);
    for_erased.owners = vec![kept, erased];
    let mut for_kept = probe("for-kept", 0, 1);
    for_kept.owners = vec![kept];

    let outcomes = appender::commit(&app.pool, &[&for_erased, &for_kept])
        .await
        .unwrap();

    assert_eq!(outcomes[0], Appended::Erased);
    assert!(matches!(
        outcomes[1],
        Appended::Committed { version: 1, .. }
    ));
    assert!(app.sequences("probe", "for-erased").await.is_empty());
    assert_eq!(app.sequences("probe", "for-kept").await, [1]);
}

/// An order's cap of payments is counted under the commit point, with the creations its
/// batch accepted before: of five creations for one order in one batch, with a cap of three,
/// the first three commit and the other two are stale, whatever the count they were decided
/// on; another order's creation in the batch is not held back by them.
#[tokio::test]
async fn in_one_batch_payment_creations_past_their_orders_cap_fail_alone() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let batch = [
        capped_payment("p1", "o1", 3),
        capped_payment("p2", "o1", 3),
        capped_payment("q1", "o2", 3),
        capped_payment("p3", "o1", 3),
        capped_payment("p4", "o1", 3),
        capped_payment("p5", "o1", 3),
    ];
    let outcomes = appender::commit(&app.pool, &batch.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    let committed: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, Appended::Committed { version: 1, .. }))
        .collect();
    assert_eq!(
        committed,
        [true, true, true, true, false, false],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[4],
        Appended::Stale {
            own: false,
            stream: "the payments of order o1".into(),
            actual: 3
        }
    );
    // A later batch finds the three committed ones.
    let again = appender::commit(&app.pool, &[&capped_payment("p6", "o1", 3)])
        .await
        .unwrap();
    assert!(matches!(
        again[0],
        Appended::Stale {
            own: false,
            actual: 3,
            ..
        }
    ));
    for (id, sequences) in [
        ("p1", vec![1]),
        ("p3", vec![1]),
        ("p4", vec![]),
        ("q1", vec![1]),
    ] {
        assert_eq!(app.sequences("payment", id).await, sequences, "{id}");
    }
}

/// The appender decides a batch without reading first (the fast path) only while everything
/// the decision would have read still holds; when a check fails, nothing of the batch is
/// written by it and the batch is read and decided as before. Another process appending
/// sends the next batch to the read too, and the chain stays whole through all of it.
#[tokio::test]
async fn the_fast_path_is_taken_only_while_its_checks_hold() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let appender = Appender::start(app.pool.clone(), |_| {});
    let other_process = Appender::start(app.pool.clone(), |_| {});
    let batches = |a: &Appender| {
        let b = a.batches();
        (b.fast.load(Relaxed), b.read.load(Relaxed))
    };
    let committed = |outcome: Appended, expected: u64| {
        assert!(
            matches!(outcome, Appended::Committed { version, .. } if version == expected),
            "{outcome:?}"
        );
    };

    // Before its first commit the appender does not know the log's head: it reads.
    committed(appender.append(probe("x", 0, 1)).await.unwrap(), 1);
    assert_eq!(batches(&appender), (0, 1));
    committed(appender.append(probe("y", 0, 2)).await.unwrap(), 2);
    assert_eq!(
        batches(&appender),
        (1, 1),
        "the second batch goes the fast path"
    );

    // Its own stream moved.
    assert_eq!(
        appender.append(probe("x", 0, 1)).await.unwrap(),
        Appended::Stale {
            own: true,
            stream: "probe/x".into(),
            actual: 1
        }
    );
    // A stream it read moved.
    let mut reading = probe("z", 0, 1);
    reading.reads.push(StreamVersion {
        aggregate_type: "probe".into(),
        aggregate_id: "y".into(),
        version: 1,
    });
    assert_eq!(
        appender.append(reading).await.unwrap(),
        Appended::Stale {
            own: false,
            stream: "probe/y".into(),
            actual: 2
        }
    );
    // A customer whose data it carries was erased.
    let erased = uuid::Uuid::now_v7();
    ordo_commands::privacy::Keyring::new(app.pool.clone(), None)
        .erase(erased)
        .await
        .unwrap();
    let mut for_erased = probe("for-erased", 0, 1);
    for_erased.owners = vec![erased];
    assert_eq!(appender.append(for_erased).await.unwrap(), Appended::Erased);
    // The order it creates a payment for has its cap of payments (one, here).
    committed(
        appender
            .append(capped_payment("p1", "o1", 1))
            .await
            .unwrap(),
        1,
    );
    assert_eq!(batches(&appender), (2, 4));
    assert!(matches!(
        appender
            .append(capped_payment("p2", "o1", 1))
            .await
            .unwrap(),
        Appended::Stale {
            own: false,
            actual: 1,
            ..
        }
    ));
    // Its key was answered by an earlier append.
    let keyed = |id: &str| {
        let mut append = probe(id, 0, 1);
        append.answer = Some(Answer {
            scope: "probe".into(),
            key: "k".into(),
            request_hash: "h".into(),
            status: 201,
            body: None,
        });
        append
    };
    committed(appender.append(keyed("first")).await.unwrap(), 1);
    let Appended::Answered(stored) = appender.append(keyed("second")).await.unwrap() else {
        panic!("the stored answer")
    };
    assert_eq!(
        (stored.status, stored.body["id"].as_str()),
        (201, Some("first"))
    );
    // Each failed check went to the read; each success before and after it, fast.
    assert_eq!(batches(&appender), (3, 6));

    // Another process appended: the head moved, so the next batch reads, the one after is
    // fast again.
    committed(other_process.append(probe("o", 0, 1)).await.unwrap(), 1);
    committed(appender.append(probe("v", 0, 1)).await.unwrap(), 1);
    committed(appender.append(probe("w", 0, 1)).await.unwrap(), 1);
    assert_eq!(batches(&appender), (4, 7));

    for (id, sequences) in [
        ("x", vec![1]),
        ("y", vec![1, 2]),
        ("z", vec![]),
        ("for-erased", vec![]),
        ("first", vec![1]),
        ("second", vec![]),
        ("o", vec![1]),
        ("v", vec![1]),
        ("w", vec![1]),
    ] {
        assert_eq!(app.sequences("probe", id).await, sequences, "{id}");
    }
    app.assert_chain_intact().await;
}

/// The appender writes on a connection of its own. Cut while it idles (as a PostgreSQL
/// restart would), the next batch is written on a new connection: it committed nothing on
/// the old one, so its callers see no error.
#[tokio::test]
async fn an_appender_whose_connection_was_cut_writes_the_next_batch_on_a_new_one() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let appender = Appender::start(app.pool.clone(), |_| {});
    assert!(matches!(
        appender.append(probe("before", 0, 1)).await.unwrap(),
        Appended::Committed { version: 1, .. }
    ));

    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1",
    )
    .bind(appender::APPLICATION_NAME)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(cut, [true], "the appender's one connection");

    for (append, version) in [(probe("after", 0, 1), 1), (probe("before", 1, 1), 2)] {
        let outcome = appender.append(append).await.unwrap();
        assert!(
            matches!(outcome, Appended::Committed { version: v, .. } if v == version),
            "{outcome:?}"
        );
    }
    assert_eq!(app.sequences("probe", "before").await, [1, 2]);
    assert_eq!(app.sequences("probe", "after").await, [1]);
    app.assert_chain_intact().await;
}

/// The query the session named `application` waits in for a lock, once it waits.
async fn waiting_for_lock(watch: &mut sqlx::PgConnection, application: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let query: Option<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity
              WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_optional(&mut *watch)
        .await
        .unwrap();
        if let Some(query) = query {
            return query;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{application} never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// While appends wait, the appender's commit begins the next transaction and asks for the
/// commit point without waiting. When another session was already waiting for it, that
/// session gets it first; the appender waits its turn and then writes every waiting append.
#[tokio::test]
async fn an_appender_that_began_ahead_waits_its_turn_behind_another_writer() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let appender = Appender::start(app.pool.clone(), |_| {});
    let connect = || sqlx::PgConnection::connect(&app.database_url);
    let (mut holder, mut next, mut watch) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    );
    let lock = format!("SELECT pg_advisory_xact_lock({})", appender::COMMIT_POINT);
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(&lock).execute(&mut holder).await.unwrap();
    // The first append's batch waits for the lock in its BEGIN; 49 more queue behind it.
    let first = tokio::spawn({
        let appender = appender.clone();
        async move { appender.append(probe("ahead-0", 0, 1)).await }
    });
    let began = waiting_for_lock(&mut watch, appender::APPLICATION_NAME).await;
    assert!(began.starts_with("BEGIN"), "{began}");
    let rest: Vec<_> = (1..50)
        .map(|i| {
            let appender = appender.clone();
            tokio::spawn(async move { appender.append(probe(&format!("ahead-{i}"), 0, 1)).await })
        })
        .collect();
    // Once they wait in the queue, another writer asks for the lock after the appender.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while appender.waiting() < rest.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the appends never queued"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("SET application_name = 'next writer'")
        .execute(&mut next)
        .await
        .unwrap();
    let next_writer = tokio::spawn(async move {
        sqlx::query("BEGIN").execute(&mut next).await.unwrap();
        sqlx::query(&format!(
            "SELECT pg_advisory_xact_lock({})",
            appender::COMMIT_POINT
        ))
        .execute(&mut next)
        .await
        .unwrap();
        next
    });
    waiting_for_lock(&mut watch, "next writer").await;

    // The appender gets the lock first, commits the first batch, and cannot take the lock
    // again at once: the next writer holds it, and the appender waits in its own query.
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    assert!(matches!(
        first.await.unwrap().unwrap(),
        Appended::Committed { version: 1, .. }
    ));
    let mut next = next_writer.await.unwrap();
    let ahead = waiting_for_lock(&mut watch, appender::APPLICATION_NAME).await;
    assert!(ahead.starts_with("SELECT pg_advisory_xact_lock"), "{ahead}");
    assert_eq!(
        app.event_count().await,
        1,
        "nothing written while another holds the lock"
    );

    sqlx::query("COMMIT").execute(&mut next).await.unwrap();
    for append in rest {
        let outcome = append.await.unwrap().unwrap();
        assert!(
            matches!(outcome, Appended::Committed { version: 1, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(app.event_count().await, 50);
    app.assert_chain_intact().await;
}

#[tokio::test]
async fn forty_concurrent_writers_on_one_stream_lose_no_update() {
    let app = spawn_app_without_process_manager().await;
    let customer = app.register_customer().await;
    let note = |i: usize| json!({"text": format!("note {i}")});
    let path = format!("/v1/customers/{customer}/notes");

    // Without If-Match: re-decided on conflict, so each lands (or gives up with 409).
    let free = join_all((0..40).map(|i| app.post(Support, &path, note(i)))).await;
    let landed = free.iter().filter(|r| r.status == 201).count();
    for r in &free {
        assert!(matches!(r.status.as_u16(), 201 | 409), "{:?}", r.body);
    }
    // With If-Match on the version they all read: exactly one wins, the rest are 412.
    let version = 1 + landed as u64;
    let app = &app;
    let pinned = join_all((0..40).map(|i| {
        let etag = format!("\"{version}\"");
        let path = path.clone();
        async move {
            app.post_with(Support, &path, note(100 + i), &[("if-match", &etag)])
                .await
        }
    }))
    .await;
    let won = pinned.iter().filter(|r| r.status == 201).count();
    assert_eq!(won, 1, "exactly one pinned writer wins");
    for r in pinned.iter().filter(|r| r.status != 201) {
        r.assert_problem(412, "stale-version");
    }

    let sequences = app.sequences("customer", &customer).await;
    let expected: Vec<i64> = (1..=(1 + landed as i64 + 1)).collect();
    assert_eq!(
        sequences, expected,
        "contiguous, one event per answered success"
    );
}

/// Two event stores (as two processes would have, each with its own appender and pool)
/// append concurrently while a reader follows the feed: it sees every event once, and never
/// a position below one it has already passed.
#[tokio::test]
async fn two_processes_append_while_a_reader_sees_every_event_once_in_order() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let pool = |_: u8| {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(&app.database_url)
            .unwrap()
    };
    let (one, two) = (EventStore::new(pool(1)), EventStore::new(pool(2)));
    const PER_WRITER: usize = 200;

    let reader = {
        let pool = app.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut after = Checkpoint::default();
            let mut seen = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < 4 * PER_WRITER {
                assert!(
                    std::time::Instant::now() < deadline,
                    "reader saw {}",
                    seen.len()
                );
                for event in feed::read_batch(&mut conn, after, 50).await.unwrap() {
                    assert!(
                        event.checkpoint > after,
                        "a position below one already read"
                    );
                    after = event.checkpoint;
                    seen.push(event.event_id);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let write = |store: &EventStore, who: &'static str| {
        let appender = store.appender().clone();
        async move {
            join_all((0..PER_WRITER).map(|i| {
                let appender = appender.clone();
                async move {
                    let outcome = appender
                        .append(probe(&format!("{who}-{i}"), 0, 2))
                        .await
                        .unwrap();
                    assert!(matches!(outcome, Appended::Committed { version: 2, .. }));
                }
            }))
            .await;
        }
    };
    tokio::join!(write(&one, "one"), write(&two, "two"));
    let seen = reader.await.unwrap();

    assert_eq!(seen.len(), 4 * PER_WRITER);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "every event exactly once");
    assert_eq!(app.event_count().await, (4 * PER_WRITER) as i64);
    // Each appender's fast path checked that the head was its own: the chain is whole.
    app.assert_chain_intact().await;
}

/// Other processes' readers are woken by `NOTIFY ordo_events` at most once per
/// `WAKE_SPACING`, however often the appender commits, and the last commit is always
/// announced: commits made while a wake-up is spaced share the next one.
#[tokio::test]
async fn wake_ups_of_other_processes_are_spaced_and_the_last_commit_is_always_announced() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen(feed::CHANNEL).await.unwrap();
    let store = EventStore::new(app.pool.clone());
    const APPENDS: usize = 200;

    // One append at a time: each commits alone, a millisecond or two apart.
    let started = std::time::Instant::now();
    let mut head = 0;
    for i in 0..APPENDS {
        match store
            .appender()
            .append(probe(&format!("wake-{i}"), 0, 1))
            .await
            .unwrap()
        {
            Appended::Committed { position, .. } => head = position,
            other => panic!("append {i}: {other:?}"),
        }
    }

    let mut positions = Vec::new();
    while positions.last() != Some(&head) {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the last commit announced within 10 s")
            .unwrap();
        positions.push(notification.payload().parse::<i64>().unwrap());
    }
    let elapsed = started.elapsed();
    // Never falling, though two may carry the same head: a wake-up can read a head whose
    // commit's own signal arrives just after and leaves a permit.
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "announced heads never fall: {positions:?}"
    );
    let most = (elapsed.as_micros() / ordo_commands::store::WAKE_SPACING.as_micros()) as usize + 1;
    assert!(
        positions.len() <= most,
        "{} wake-ups for {APPENDS} commits in {elapsed:?}: at most {most}",
        positions.len()
    );
}

/// A write transaction left open on the server (in this database and another) does not hold
/// back the projections: a read of your write answers at once, not after the wait.
#[tokio::test]
async fn a_transaction_left_open_on_the_server_does_not_hold_back_reads_of_your_writes() {
    let app = spawn_app_with(|c| c.read_wait_secs = 5).await;
    let customer = app.register_customer().await;
    let mut other_db = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base()))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other_db).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut other_db)
        .await
        .unwrap();
    let mut here = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *here)
        .await
        .unwrap();

    for _ in 0..5 {
        let placed = app
            .post(Storefront, "/v1/orders", order_body(&customer))
            .await;
        placed.assert_status(201);
        let position = placed.body["position"].as_i64().unwrap();
        let read = app
            .get(
                Storefront,
                &format!("/v1/orders/{}?min_position={position}", placed.id()),
            )
            .await;
        // Before positions followed commits this waited the 5 s and answered 503.
        read.assert_status(200);
    }
    here.rollback().await.unwrap();
    sqlx::query("ROLLBACK")
        .execute(&mut other_db)
        .await
        .unwrap();
}

/// A `VACUUM` or `ANALYZE` of a read model's table (its lock, SHARE UPDATE EXCLUSIVE, held
/// open here) does not hold back reads of your writes: nothing Ordo runs while it serves
/// queues a lock that such a lock holds up. Before, the rebuild role ran every read model's
/// DDL each second, and its `CREATE INDEX IF NOT EXISTS` (a SHARE lock, even on an index
/// that exists) waited behind the vacuum, the read model's own writes behind it.
#[tokio::test]
async fn a_vacuum_of_a_read_model_table_does_not_hold_back_reads_of_your_writes() {
    let app = spawn_app_with(|c| c.read_wait_secs = 5).await;
    let customer = app.register_customer().await;
    let mut vacuum = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query("LOCK TABLE projections.orders IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *vacuum)
        .await
        .unwrap();

    // Long enough for several rounds of the rebuild role (one a second).
    let started = std::time::Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(3) || reads < 5 {
        let placed = app
            .post(Storefront, "/v1/orders", order_body(&customer))
            .await;
        placed.assert_status(201);
        let position = placed.body["position"].as_i64().unwrap();
        app.get(
            Storefront,
            &format!("/v1/orders/{}?min_position={position}", placed.id()),
        )
        .await
        .assert_status(200);
        reads += 1;
    }
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = (
             SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 0, "no lock waits behind the vacuum's");
    vacuum.rollback().await.unwrap();
}

/// An order placed, with `payments` payments created for it.
async fn order_with_payments(app: &TestApp, payments: i64) -> String {
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    join_all((0..payments).map(|_| app.payment(&order, 1))).await;
    order
}

/// `POST /v1/payments` for `order`, whatever it answers.
async fn try_payment(app: &TestApp, order: &str) -> Resp {
    app.post(
        Storefront,
        "/v1/payments",
        json!({"order_id": order, "amount": 1, "currency": "EUR", "method": "card"}),
    )
    .await
}

/// Payment events in the log: creations alone, where nothing else acts on payments.
async fn payments_recorded(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_store.events WHERE aggregate_type = 'payment'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// An order takes a bounded number of payments: shipping and the process manager fold each.
#[tokio::test]
async fn an_order_refuses_payments_beyond_its_limit() {
    let app = spawn_app_without_process_manager().await;
    let limit = ordo_commands::service::MAX_PAYMENTS_PER_ORDER;
    let order = order_with_payments(&app, limit).await;

    try_payment(&app, &order)
        .await
        .assert_problem(409, "too-many-payments");
    assert_eq!(payments_recorded(&app).await, limit);
}

/// Creations for one order in flight at the same time are each decided against a count read
/// before any of them is recorded; counted again under the commit point, they cannot pass
/// the limit together.
#[tokio::test]
async fn a_burst_of_payments_for_one_order_stops_at_its_limit() {
    let app = spawn_app_without_process_manager().await;
    let limit = ordo_commands::service::MAX_PAYMENTS_PER_ORDER;
    let order = order_with_payments(&app, limit - 5).await;

    let burst = join_all((0..20).map(|_| try_payment(&app, &order))).await;

    let created = burst.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 5, "the five the limit leaves");
    for refused in burst.iter().filter(|r| r.status != 201) {
        refused.assert_problem(409, "too-many-payments");
    }
    assert_eq!(payments_recorded(&app).await, limit);
}

/// A customer takes a bounded number of notes: every command on a customer folds them all.
#[tokio::test]
async fn a_customer_refuses_notes_beyond_its_limit() {
    let app = spawn_app_without_process_manager().await;
    let customer = app.register_customer().await;
    let path = format!("/v1/customers/{customer}/notes");
    let limit = ordo_domain::customer::MAX_NOTES;
    // One stream: sequential, so no note waits on another's write conflict.
    for i in 0..limit {
        app.post(Support, &path, json!({"text": format!("note {i}")}))
            .await
            .assert_status(201);
    }

    let refused = app
        .post(Support, &path, json!({"text": "one too many"}))
        .await;
    refused.assert_problem(409, "too-many-notes");
    let notes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'customer.note_added'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(notes, limit as i64);
}
