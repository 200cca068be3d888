//! Signed checkpoints against a superuser who covers their tracks: a rewrite with every hash
//! recomputed, a cut tail and a checkpoint signed with another key each contradict a
//! signature the trusted key made. Signing on demand and on a timer, and `/readyz` without
//! a key.

use ordo::Config;
use ordo_api::Role::{Admin, Support};
use ordo_commands::audit::{self, Contradiction, Verification};
use ordo_commands::checkpoint::{self, Invalid, Signed, Signer, TrustedKey};
use serde_json::json;
use sqlx::{PgPool, Row};

use crate::audit::tamper::behind_the_back;
use crate::helpers::{read, spawn_app_with, TestApp};

/// A test key (`head -c 32 /dev/urandom | base64` in real life).
pub(crate) const KEY: &str = "c2lnbmluZy1rZXktc2VjcmV0LXNlZWQtMzItYnl0ZXM=";
const OTHER_KEY: &str = "YW5vdGhlci1rZXktLW5vdC10aGUtdHJ1c3RlZC1vbmU=";

pub(crate) fn signer(key: &str) -> Signer {
    Signer::from_base64(key).unwrap()
}

pub(crate) fn with_key(c: &mut Config) {
    c.roles = vec![ordo::ProcessRole::Api, ordo::ProcessRole::Projector];
    c.audit_signing_key = Some(KEY.to_owned().into());
    c.audit_checkpoint_secs = 0;
}

/// Two orders (six events) and a checkpoint signed over the API at the head.
pub(crate) async fn signed_history(app: &TestApp) -> i64 {
    app.confirmed_order().await;
    app.confirmed_order().await;
    let head = app.event_count().await;
    let signed = app.post(Admin, "/v1/audit/checkpoints", json!({})).await;
    signed.assert_status(201);
    assert_eq!(signed.body["position"], head);
    let public = checkpoint::public_key_text(&signer(KEY).public_key());
    assert_eq!(signed.body["public_key"], public);
    head
}

async fn verify(pool: &PgPool) -> Verification {
    let trusted = [TrustedKey::unnamed(signer(KEY).public_key())];
    audit::verify(pool, 1, &trusted, |_| {}).await.unwrap()
}

/// What a careful forger does after an edit: recompute every hash from the first one on,
/// so that every link holds again.
pub(crate) async fn rehash_everything(pool: &PgPool) {
    let rows = sqlx::query(include_str!("../../../commands/src/sql/chain_page.sql"))
        .bind(0_i64)
        .bind(i64::MAX)
        .bind(i64::MAX)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut previous = ordo_commands::chain::ZERO;
    let mut updates = Vec::new();
    for row in rows {
        let hash = audit::expected_link(&row, &previous).unwrap().unwrap();
        let position: i64 = row.try_get("global_position").unwrap();
        updates.push(format!(
            "UPDATE event_store.events SET hash = '\\x{}' WHERE global_position = {position}",
            hex::encode(hash)
        ));
        previous = hash;
    }
    let updates: Vec<&str> = updates.iter().map(String::as_str).collect();
    behind_the_back(pool, &updates).await;
}

fn cli(app: &TestApp, env: &[(&str, &str)]) -> (bool, String) {
    ordo(app, &["audit", "verify"], env)
}

/// Run `ordo ARGS` against the app's database: whether it succeeded, and its stdout.
pub(crate) fn ordo(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_consistent_rewrite_after_a_signed_checkpoint_is_caught_by_the_signature() {
    let app = spawn_app_with(with_key).await;
    let head = signed_history(&app).await;
    let clean = verify(&app.pool).await;
    assert!(clean.intact(), "{:?}", clean.signatures);
    assert_eq!(clean.signatures.as_ref().unwrap().covered, Some(head));

    behind_the_back(
        &app.pool,
        &[
            "UPDATE event_store.events SET payload = jsonb_set(payload, '{name}', '\"Mallory\"')
            WHERE global_position = 1",
        ],
    )
    .await;
    rehash_everything(&app.pool).await;

    let report = verify(&app.pool).await;
    assert_eq!(report.broken_count, 0, "the forger's chain links");
    let signatures = report.signatures.as_ref().unwrap();
    assert_eq!(signatures.faults.len(), 1, "{:?}", signatures.faults);
    let fault = &signatures.faults[0];
    assert_eq!(fault.checkpoint.position, head);
    assert!(
        matches!(
            fault.contradiction,
            Contradiction::Rewritten { since: None, .. }
        ),
        "{fault:?}"
    );
    assert!(!report.intact());
    assert_eq!(signatures.covered, None);

    // The same verdict from the CLI of an auditor who holds only the public key.
    let public = checkpoint::public_key_text(&signer(KEY).public_key());
    let (ok, out) = cli(&app, &[("ORDO_AUDIT_PUBLIC_KEY", &public)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("CHECKPOINT signed checkpoint #1 (position {head}")),
        "{out}"
    );
    assert!(out.contains("were rewritten"), "{out}");
    // Without any key the signatures are not checked, and verify says so.
    let (ok, out) = cli(&app, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("signatures not checked"), "{out}");
}

#[tokio::test]
async fn cutting_the_tail_past_a_checkpoint_is_caught() {
    let app = spawn_app_with(with_key).await;
    let head = signed_history(&app).await;
    behind_the_back(
        &app.pool,
        &[&format!(
            "DELETE FROM event_store.events WHERE global_position > {}",
            head - 2
        )],
    )
    .await;
    let report = verify(&app.pool).await;
    assert_eq!(
        report.broken_count, 0,
        "a cut tail leaves a chain that links"
    );
    let faults = &report.signatures.as_ref().unwrap().faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].checkpoint.position, head);
    assert_eq!(
        faults[0].contradiction,
        Contradiction::Gone { past_head: true }
    );
    assert!(faults[0]
        .to_string()
        .contains("the tail of the log was cut"));
}

#[tokio::test]
async fn an_edit_under_a_checkpoint_names_the_event_and_the_checkpoint_it_contradicts() {
    let app = spawn_app_with(with_key).await;
    let head = signed_history(&app).await;
    // More events after the checkpoint: protected by the chain only.
    app.confirmed_order().await;
    let report = verify(&app.pool).await;
    assert!(report.intact());
    assert!(
        report.coverage().contains(&format!(
            "events after position {head}, the last signed checkpoint, are protected by the chain only"
        )),
        "{}",
        report.coverage()
    );
    behind_the_back(
        &app.pool,
        &[
            "UPDATE event_store.events SET payload = jsonb_set(payload, '{name}', '\"Mallory\"')
            WHERE global_position = 1",
        ],
    )
    .await;
    let (ok, out) = cli(&app, &[("ORDO_AUDIT_SIGNING_KEY", KEY)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("BROKEN position 1 (customer.registered")
            && out.contains(&format!(
                "it contradicts signed checkpoint #1 (position {head}"
            )),
        "{out}"
    );
}

#[tokio::test]
async fn a_checkpoint_signed_with_another_key_is_reported() {
    let app = spawn_app_with(with_key).await;
    signed_history(&app).await;
    app.confirmed_order().await;
    let Signed::New(foreign) = checkpoint::sign(&app.pool, &signer(OTHER_KEY))
        .await
        .unwrap()
    else {
        panic!("another key signs the head anew");
    };
    let report = verify(&app.pool).await;
    assert_eq!(report.broken_count, 0);
    let faults = &report.signatures.as_ref().unwrap().faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].checkpoint.id, Some(foreign.id));
    assert!(matches!(
        faults[0].contradiction,
        Contradiction::Unsigned(Invalid::OtherKey, _)
    ));
    // Relabelled with the trusted key, its signature does not hold.
    let trusted = signer(KEY).public_key();
    sqlx::query("UPDATE audit.checkpoints SET public_key = $1 WHERE id = $2")
        .bind(trusted.as_bytes().as_slice())
        .bind(foreign.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let faults = verify(&app.pool).await.signatures.unwrap().faults;
    assert!(matches!(
        faults[0].contradiction,
        Contradiction::Unsigned(Invalid::BadSignature, _)
    ));
}

#[tokio::test]
async fn checkpoints_of_a_retired_key_still_verify_beside_the_current_keys() {
    // Signed with the old key, then (rotated) with the new one.
    let app = spawn_app_with(with_key).await;
    let old_head = signed_history(&app).await;
    app.confirmed_order().await;
    let Signed::New(by_new) = checkpoint::sign(&app.pool, &signer(OTHER_KEY))
        .await
        .unwrap()
    else {
        panic!("the new key signs the head anew");
    };
    let old = checkpoint::public_key_text(&signer(KEY).public_key());
    let new = checkpoint::public_key_text(&signer(OTHER_KEY).public_key());

    // Both trusted: intact, and each checkpoint is credited to the key that signed it.
    let trusted = checkpoint::trusted_keys(&format!("old={old}, {new}")).unwrap();
    assert_eq!(trusted[0].name, "old");
    assert_eq!(
        trusted[1].name, new,
        "an unnamed key is named by its base64"
    );
    let report = audit::verify(&app.pool, 1, &trusted, |_| {}).await.unwrap();
    assert!(report.intact(), "{:?}", report.signatures);
    let signatures = report.signatures.unwrap();
    assert_eq!(signatures.covered, Some(by_new.position));
    let used: Vec<_> = signatures
        .keys
        .iter()
        .map(|k| (k.name.as_str(), k.signed, k.first, k.last))
        .collect();
    assert_eq!(
        used,
        [
            ("old", 1, Some(old_head), Some(old_head)),
            (
                new.as_str(),
                1,
                Some(by_new.position),
                Some(by_new.position)
            ),
        ]
    );
    // The new key alone: the old key's checkpoint is another key's.
    let alone = checkpoint::trusted_keys(&new).unwrap();
    let faults = audit::verify(&app.pool, 1, &alone, |_| {})
        .await
        .unwrap()
        .signatures
        .unwrap()
        .faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].checkpoint.position, old_head);

    // The CLI of an auditor with both public keys says which key signed what.
    let (ok, out) = cli(
        &app,
        &[("ORDO_AUDIT_PUBLIC_KEY", &format!("old={old},new={new}"))],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "signed by key \"old\" ({old}): 1 holding checkpoint(s), positions {old_head}..={old_head}"
        )),
        "{out}"
    );
    let at = by_new.position;
    assert!(
        out.contains(&format!(
            "signed by key \"new\" ({new}): 1 holding checkpoint(s), positions {at}..={at}"
        )),
        "{out}"
    );
    // A malformed list stops the command before it reads anything.
    let (ok, _) = cli(&app, &[("ORDO_AUDIT_PUBLIC_KEY", &format!("{old},{old}"))]);
    assert!(!ok, "a repeated key is refused");
}

#[tokio::test]
async fn signing_twice_without_new_events_keeps_one_checkpoint_and_the_timer_signs_new_ones() {
    let app = spawn_app_with(|c| {
        with_key(c);
        c.audit_checkpoint_secs = 1;
    })
    .await;
    app.confirmed_order().await;
    let head = app.event_count().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let signed: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM audit.checkpoints")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if signed == Some(head) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint at {head}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = app.post(Admin, "/v1/audit/checkpoints", json!({})).await;
    again.assert_status(200);
    assert_eq!(again.body["position"], head);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit.checkpoints WHERE position = $1")
            .bind(head)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(count, 1);
    let list = app.get(Admin, "/v1/audit/checkpoints").await;
    list.assert_status(200);
    assert_eq!(list.body["items"][0]["position"], head);
    app.get(Support, "/v1/audit/checkpoints")
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn without_a_key_signing_is_off_and_readyz_says_so_but_stays_ready() {
    let app = spawn_app_with(|c| {
        c.roles = vec![ordo::ProcessRole::Api];
    })
    .await;
    let ready = read(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    ready.assert_status(200);
    assert_eq!(ready.body["checks"]["audit_signing"]["status"], "off");
    assert!(ready.body["checks"]["audit_signing"]["detail"]
        .as_str()
        .unwrap()
        .contains("ORDO_AUDIT_SIGNING_KEY is not set"));
    app.confirmed_order().await;
    let refused = app.post(Admin, "/v1/audit/checkpoints", json!({})).await;
    refused.assert_problem(503, "not-configured");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("no ORDO_AUDIT_SIGNING_KEY"),
        "{:#?}",
        refused.body
    );

    let signing = spawn_app_with(with_key).await;
    let ready = read(
        signing
            .client
            .get(signing.url("/readyz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ready.body["checks"]["audit_signing"]["status"], "on");
    assert_eq!(
        ready.body["checks"]["audit_signing"]["public_key"],
        checkpoint::public_key_text(&signer(KEY).public_key())
    );
}
