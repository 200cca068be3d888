//! `/readyz`: PostgreSQL, NATS (when this process needs it) and each role's state; 503 with
//! the same body when anything is not up. The PostgreSQL cut is in `errors.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo::{Application, Config, ProcessRole};
use ordo_runtime::process::ProcessRoleState;
use serde_json::json;

use crate::helpers::{fresh_database_url, read, spawn_app, spawn_app_with, start, Resp, TestApp};
use crate::nats::NATS;

async fn readyz(app: &TestApp) -> Resp {
    read(app.client.get(app.url("/readyz")).send().await.unwrap()).await
}

#[tokio::test]
async fn a_ready_app_reports_postgres_and_every_role_running() {
    let app = spawn_app().await;
    let ready = readyz(&app).await;
    ready.assert_status(200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["checks"]["postgres"]["status"], "up");
    assert_eq!(ready.header("cache-control"), Some("no-store"));
    // No relay or workers here: NATS is reported but not required.
    assert_eq!(ready.body["checks"]["nats"]["required"], false);
    assert_eq!(
        ready.body["roles"],
        json!({
            "api": "running",
            "process_manager": "running",
            "projector.customers": "running",
            "projector.orders": "running",
            "projector.payments": "running",
            "projector.rebuilds": "running",
        })
    );
}

/// A process without the `api` role serves only the operations routes: its readiness lists
/// the roles it runs, and no `api` among them.
#[tokio::test]
async fn a_process_without_the_api_role_does_not_report_one() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Projector]).await;
    let ready = readyz(&app).await;
    ready.assert_status(200);
    assert_eq!(
        ready.body["roles"],
        json!({
            "projector.customers": "running",
            "projector.orders": "running",
            "projector.payments": "running",
            "projector.rebuilds": "running",
        })
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_relay_without_nats_makes_the_process_not_ready_and_says_why() {
    let port = closed_port();
    let app = spawn_app_with(|c| {
        c.roles.push(ProcessRole::Relay);
        c.nats_url = format!("nats://127.0.0.1:{port}");
    })
    .await;
    let ready = readyz(&app).await;
    ready.assert_status(503);
    assert_eq!(ready.body["status"], "not_ready");
    assert_eq!(
        ready.body["checks"]["nats"],
        json!({"status": "down", "required": true})
    );
    assert_eq!(ready.body["checks"]["postgres"]["status"], "up");
    // The relay itself waits for NATS in the background; the nats check is what fails.
    let relay = ready.body["roles"]["relay"].as_str().unwrap();
    assert!(["starting", "running"].contains(&relay), "{relay}");
    assert_eq!(ready.body["roles"]["api"], "running");
}

#[tokio::test]
async fn a_relay_with_nats_becomes_ready() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stream = format!("ORDO_TEST_{id}");
    let app = spawn_app_with(|c| {
        c.roles.push(ProcessRole::Relay);
        c.nats_url = NATS.into();
        c.nats_stream = stream.clone();
        c.nats_subject_prefix = format!("t{id}.events");
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = readyz(&app).await;
        if ready.status == 200 || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Stopped first: a running relay would create the stream again.
    app.stop().await;
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let _ = js.delete_stream(&stream).await;
    ready.assert_status(200);
    assert_eq!(
        ready.body["checks"]["nats"],
        json!({"status": "up", "required": true})
    );
    assert_eq!(ready.body["roles"]["relay"], "running");
}

#[tokio::test]
async fn after_a_shutdown_every_role_is_stopped() {
    let database_url = fresh_database_url();
    let mut config = Config::defaults();
    config.database_url = database_url.clone().into();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.roles = vec![
        ProcessRole::Api,
        ProcessRole::Projector,
        ProcessRole::ProcessManager,
    ];
    let app = Application::build(&config).await.unwrap();
    let roles = app.roles().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while roles.snapshot().get("api") != Some(&ordo_runtime::process::ProcessRoleState::Running) {
        assert!(Instant::now() < deadline, "the api did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("shutdown within its timeout")
        .unwrap()
        .unwrap();
    let states = roles.snapshot();
    assert_eq!(states.len(), 6, "{states:?}");
    assert!(
        states
            .values()
            .all(|s| *s == ordo_runtime::process::ProcessRoleState::Stopped),
        "{states:?}"
    );
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_panicking_role_is_restarted_and_one_that_stays_down_fails_healthz() {
    let database_url = fresh_database_url();
    let mut config = Config::defaults();
    config.database_url = database_url.clone().into();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.roles = vec![ProcessRole::Api];
    let app = Application::build(&config).await.unwrap();
    let roles = app.roles().clone();
    roles.set_down_limit(Duration::from_millis(1500));
    let pool = app.pool().clone();
    let app = start(app, pool, database_url).await;
    let healthz =
        || async { read(app.client.get(app.url("/healthz")).send().await.unwrap()).await };
    healthz().await.assert_status(200);

    // A role that panics on every start: restarted (1 s, then 2 s later), and reported down
    // once it has stayed down past the limit.
    let starts = Arc::new(AtomicU32::new(0));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let counted = starts.clone();
    let _role = ordo::supervise::supervise(
        &roles,
        "test.panics".into(),
        &stopped,
        ProcessRoleState::Running,
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { panic!("this role always panics") }
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        let resp = healthz().await;
        if resp.status == 503u16 {
            break resp;
        }
        assert!(Instant::now() < deadline, "healthz never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        down.body,
        json!({"status": "down", "down": ["test.panics"]})
    );
    assert!(
        starts.load(Ordering::SeqCst) >= 2,
        "restarted after the first panic"
    );
    assert_eq!(
        roles.snapshot().get("test.panics"),
        Some(&ProcessRoleState::Failed)
    );
}
