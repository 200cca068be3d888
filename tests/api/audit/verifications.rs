//! `POST /v1/audit/verifications`: a background walk any API process can report on, with
//! progress and the verdict; a job whose process died reads as interrupted.

use std::time::{Duration, Instant};

use ordo_api::Role::{Admin, Support};
use serde_json::{json, Value};

use crate::audit::tamper::behind_the_back;
use crate::helpers::{spawn_app_with, Resp, TestApp};

pub(crate) const KEY: &str = "c2lnbmluZy1rZXktc2VjcmV0LXNlZWQtMzItYnl0ZXM=";

async fn app_with_key() -> TestApp {
    spawn_app_with(|c| {
        c.roles = vec![ordo::ProcessRole::Api, ordo::ProcessRole::Projector];
        c.audit_signing_key = Some(KEY.to_owned().into());
        c.audit_checkpoint_secs = 0;
    })
    .await
}

/// Start a job and follow its `Location` until it is no longer running.
async fn run_job(app: &TestApp, body: Value) -> Resp {
    let started = app.post(Admin, "/v1/audit/verifications", body).await;
    started.assert_status(202);
    let location = started.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "/v1/audit/verifications/{}",
            started.body["id"].as_str().unwrap()
        )
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.get(Admin, &location).await;
        job.assert_status(200);
        if job.body["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "still running: {:#?}", job.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_verification_job_reports_progress_and_the_first_broken_link() {
    let app = app_with_key().await;
    app.confirmed_order().await;
    app.confirmed_order().await;
    let head = app.event_count().await;
    app.post(Admin, "/v1/audit/checkpoints", json!({}))
        .await
        .assert_status(201);

    let clean = run_job(&app, json!({})).await;
    assert_eq!(clean.body["state"], "done", "{:#?}", clean.body);
    assert_eq!(clean.body["checked"], head);
    assert_eq!(clean.body["total"], head);
    let result = &clean.body["result"];
    assert_eq!(result["intact"], true);
    assert_eq!(result["signatures"]["checked"], 1);
    assert_eq!(result["signatures"]["covered_through"], head);
    let key = &result["signatures"]["keys"][0];
    assert_eq!(
        (
            &key["signed"],
            &key["first_position"],
            &key["last_position"]
        ),
        (&json!(1), &json!(head), &json!(head)),
        "the signing key, trusted alone, signed the one checkpoint: {key}"
    );
    assert!(result["coverage"]
        .as_str()
        .unwrap()
        .contains("the head, is covered"));

    behind_the_back(
        &app.pool,
        &[
            "UPDATE event_store.events SET payload = jsonb_set(payload, '{name}', '\"Mallory\"')
            WHERE global_position = 2",
        ],
    )
    .await;
    let broken = run_job(&app, json!({"from_position": 2})).await;
    assert_eq!(broken.body["state"], "done");
    assert_eq!(broken.body["from_position"], 2);
    assert_eq!(broken.body["checked"], head - 1);
    let result = &broken.body["result"];
    assert_eq!(result["intact"], false);
    assert_eq!(result["broken_count"], 1);
    let first = &result["broken"][0];
    assert_eq!(first["position"], 2);
    assert_eq!(first["fault"], "mismatch");
    assert_ne!(first["expected_hash"], first["stored_hash"]);
    assert_eq!(first["signed_by"]["position"], head);
}

#[tokio::test]
async fn a_job_whose_process_stopped_beating_reads_as_interrupted() {
    let app = app_with_key().await;
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO audit.verifications (id, state, from_position, requested_by, heartbeat_at)
         VALUES ($1, 'running', 1, 'test', now() - interval '5 minutes')",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let job = app
        .get(Admin, &format!("/v1/audit/verifications/{id}"))
        .await;
    job.assert_status(200);
    assert_eq!(job.body["state"], "interrupted");
}

#[tokio::test]
async fn verification_jobs_answer_problems_for_bad_requests() {
    let app = app_with_key().await;
    app.get(
        Admin,
        &format!("/v1/audit/verifications/{}", uuid::Uuid::new_v4()),
    )
    .await
    .assert_problem(404, "not-found");
    app.get(Admin, "/v1/audit/verifications/not-an-id")
        .await
        .assert_problem(404, "not-found");
    app.post(
        Admin,
        "/v1/audit/verifications",
        json!({"from_position": 0}),
    )
    .await
    .assert_problem(422, "validation");
    app.post(
        Admin,
        "/v1/audit/verifications",
        json!({"from_position": "x"}),
    )
    .await
    .assert_problem(422, "validation");
    app.post(Support, "/v1/audit/verifications", json!({}))
        .await
        .assert_problem(403, "forbidden");
}
