//! Bulk rebuilds: one reader for several read models, under concurrent writes, across a
//! version bump (a rolling deploy), and killed half-way.

use std::time::{Duration, Instant};

use ordo::ProcessRole;
use ordo_api::Role::{Analyst, Storefront};
use ordo_projections::rebuild::request_if_outdated;
use ordo_projections::{check, status, Projection, Rebuilder, Runner};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{fresh_database_url, spawn_app, spawn_app_with, TestApp};
use crate::read_models::projector::{fast, wait_until_caught_up, write_scenario};

/// Wait until no rebuild is requested or running.
pub(crate) async fn wait_until_rebuilt(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = status::all(&app.pool).await.unwrap();
        if all.iter().all(|s| s.rebuild.is_none()) {
            return;
        }
        assert!(Instant::now() < deadline, "rebuild did not finish: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_equal_to_the_fold(app: &TestApp) {
    wait_until_caught_up(app).await;
    let mismatches = check::check(&app.pool).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// Each read model alone, through the API, while orders keep coming.
#[tokio::test]
async fn a_bulk_rebuild_of_each_read_model_under_concurrent_writes_equals_the_fold() {
    let app = spawn_app().await;
    write_scenario(&app, 6).await;
    wait_until_caught_up(&app).await;
    let customer = app.register_customer().await;
    for name in ["orders", "payments", "customers"] {
        app.post(
            Analyst,
            &format!("/v1/projections/{name}/rebuild"),
            json!({}),
        )
        .await
        .assert_status(202);
        for _ in 0..3 {
            let order = app.place_order(&customer).await;
            app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
                .await
                .assert_status(200);
        }
        wait_until_rebuilt(&app).await;
        assert_equal_to_the_fold(&app).await;
    }
    let listed = app.get(Analyst, "/v1/projections").await;
    assert_eq!(listed.body["items"][0]["version"], 1);
    let view = app
        .get_fresh(Storefront, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(view.body["order_count"], 9);
}

/// Runners of every read model: the orders read model at `orders_version`, the others at
/// the version this code builds.
fn spawn_runners(
    app: &TestApp,
    orders_version: i32,
    id: &str,
    stopped: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    Projection::ALL
        .into_iter()
        .map(|p| {
            let version = if p == Projection::Orders {
                orders_version
            } else {
                p.version()
            };
            let runner = Runner::new(app.pool.clone(), p, fast())
                .with_id(id)
                .with_version(version);
            tokio::spawn(runner.run(stopped.clone()))
        })
        .collect()
}

/// A process with orders at version 2 joins one at version 1: it builds version 2 in the
/// shadow while version 1 keeps serving, swaps, and then leads; the old one stands down.
#[tokio::test]
async fn a_version_bump_rebuilds_in_the_shadow_while_the_old_version_serves_until_the_swap() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = spawn_runners(&app, 1, "v1", &stopped);
    let old = Rebuilder::new(app.pool.clone(), fast());
    write_scenario(&app, 4).await;
    wait_until_caught_up(&app).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await
        .assert_status(200);

    // The new process asks for its version; until it builds, version 1 serves, and the old
    // process does not build a version it does not have.
    assert!(request_if_outdated(&app.pool, Projection::Orders, 2)
        .await
        .unwrap());
    assert_eq!(old.rebuild_once(&stopped).await.unwrap(), 0);
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(s.rebuild.as_ref().and_then(|r| r.version), Some(2));
    let listed = app.get(Analyst, "/v1/projections").await;
    assert_eq!(listed.body["items"][0]["state"], "rebuilding");
    assert_eq!(listed.body["items"][0]["version"], 1);
    assert_eq!(listed.body["items"][0]["rebuild"]["version"], 2);
    // Reads answer from version 1's tables, and it still applies new events.
    let during = app.place_order(&customer).await;
    app.get_fresh(Storefront, &format!("/v1/orders/{during}"))
        .await
        .assert_status(200);

    let new = Rebuilder::new(app.pool.clone(), fast()).with_version(Projection::Orders, 2);
    tasks.push(tokio::spawn(new.run(stopped.clone())));
    tasks.push(tokio::spawn(
        Runner::new(app.pool.clone(), Projection::Orders, fast())
            .with_id("v2")
            .with_version(2)
            .run(stopped.clone()),
    ));
    wait_until_rebuilt(&app).await;
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(s.version, 2, "version 2 serves after the swap");

    // Version 2 leads the live tables from now on.
    let after = app.place_order(&customer).await;
    app.get_fresh(Storefront, &format!("/v1/orders/{after}"))
        .await
        .assert_status(200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status::one(&app.pool, Projection::Orders)
        .await
        .unwrap()
        .runner
        .as_deref()
        != Some("v2")
    {
        assert!(Instant::now() < deadline, "the version 2 runner never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_equal_to_the_fold(&app).await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A transaction that read a live table and stays open (an analyst's long query) does not
/// stall the read model's reads when a rebuild comes to its swap: the swap waits only a
/// moment for the table, gives up, and swaps in a later round, once the reader is done.
/// Before, the swap's wait for the table's exclusive lock lasted as long as the reader, and
/// every read of the table queued behind it.
#[tokio::test]
async fn a_long_reader_of_a_live_table_defers_the_swap_and_holds_up_no_read() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (stop, stopped) = watch::channel(false);
    let tasks = spawn_runners(&app, 1, "v1", &stopped);
    write_scenario(&app, 2).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    wait_until_caught_up(&app).await;

    let mut report = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query("SELECT count(*) FROM projections.orders")
        .execute(&mut *report)
        .await
        .unwrap();
    assert!(request_if_outdated(&app.pool, Projection::Orders, 2)
        .await
        .unwrap());
    let rebuilder = Rebuilder::new(app.pool.clone(), fast()).with_version(Projection::Orders, 2);
    let round = tokio::time::timeout(Duration::from_secs(30), rebuilder.rebuild_once(&stopped))
        .await
        .expect("a round ends while the reader holds the table");
    assert_eq!(
        round.unwrap(),
        0,
        "no swap while the reader holds the table"
    );
    // Reads answer from version 1's tables meanwhile.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        app.get(Storefront, &format!("/v1/orders/{order}")),
    )
    .await
    .expect("a read answers while the reader holds the table");
    read.assert_status(200);
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(s.rebuild.as_ref().and_then(|r| r.version), Some(2));

    report.rollback().await.unwrap();
    assert_eq!(rebuilder.rebuild_once(&stopped).await.unwrap(), 1);
    let s = status::one(&app.pool, Projection::Orders).await.unwrap();
    assert_eq!(s.version, 2, "swapped once the reader was done");
    assert!(s.rebuild.is_none());
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Rebuilders killed at arbitrary moments (mid-load, mid-index, mid-swap) leave a rebuild
/// that the next one resumes or restarts, ending equal to the fold.
#[tokio::test]
async fn a_rebuild_killed_half_way_resumes_and_ends_equal_to_the_fold() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = spawn_runners(&app, 1, "live", &stopped);
    write_scenario(&app, 8).await;
    wait_until_caught_up(&app).await;
    for p in Projection::ALL {
        status::request_rebuild(&app.pool, p).await.unwrap();
    }
    let customer = app.register_customer().await;
    for round in 0..10u64 {
        let rebuilder = Rebuilder::new(app.pool.clone(), fast());
        let task = tokio::spawn(rebuilder.run(stopped.clone()));
        tokio::time::sleep(Duration::from_millis(5 + round * 11 % 40)).await;
        task.abort();
        let _ = task.await;
        app.place_order(&customer).await;
    }
    tasks.push(tokio::spawn(
        Rebuilder::new(app.pool.clone(), fast()).run(stopped.clone()),
    ));
    wait_until_rebuilt(&app).await;
    assert_equal_to_the_fold(&app).await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

/// `ordo projections check` on `database_url`: whether it succeeded, and what it printed
/// (stdout, then stderr). Not a terminal, so progress comes as plain log lines, not a bar.
fn projections_check(database_url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["projections", "check"])
        .env("DATABASE_URL", database_url)
        .env("ORDO_LOG", "info")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

/// `ordo projections check` run on a new deployment before any `ordo serve`: the read
/// models' tables are not there yet, and the check compares the (empty) log with empty read
/// models instead of failing on a missing table.
#[tokio::test]
async fn projections_check_on_the_cli_works_before_any_process_has_served() {
    let database_url = fresh_database_url();
    let (checked, log) = projections_check(&database_url);
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
    assert!(checked, "{log}");
    assert!(
        log.contains("read models equal the fold of the log"),
        "{log}"
    );
}

#[tokio::test]
async fn projections_check_on_the_cli_reports_its_progress_through_the_log() {
    // No process manager: nothing writes after the scenario.
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api, ProcessRole::Projector]).await;
    write_scenario(&app, 3).await;
    wait_until_caught_up(&app).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (checked, log) = projections_check(&app.database_url);
    assert!(checked, "{log}");
    // Log lines are JSON when stderr is not a terminal.
    let progress: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "no progress line: {log}");
    assert!(
        progress.iter().all(|l| l["total"] == events),
        "each line gives the log's {events} events as the total: {progress:#?}"
    );
    let last = progress.last().unwrap();
    assert_eq!(
        last["done"], events,
        "the last line says the whole log was read"
    );
    assert_eq!(last["percent"], 100.0);
    assert!(
        log.contains("read models equal the fold of the log"),
        "{log}"
    );
}
