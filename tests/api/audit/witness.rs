//! The witness file against a superuser who deletes signed checkpoint rows and then rewrites
//! the log after the last one left: the database alone then verifies (with less coverage),
//! the witness kept outside it names every deleted checkpoint.

use std::path::{Path, PathBuf};

use ordo_api::Role::Admin;
use ordo_commands::audit::{self, Contradiction, Verification};
use ordo_commands::checkpoint::TrustedKey;
use ordo_commands::witness;
use serde_json::json;

use crate::audit::checkpoints::{ordo, rehash_everything, signed_history, signer, with_key, KEY};
use crate::audit::tamper::behind_the_back;
use crate::helpers::{spawn_app_with, TestApp};

fn witness_file() -> PathBuf {
    std::env::temp_dir().join(format!("ordo-witness-{}.jsonl", uuid::Uuid::new_v4()))
}

async fn verify(app: &TestApp, witness: Option<&Path>) -> Verification {
    let trusted = [TrustedKey::unnamed(signer(KEY).public_key())];
    let lines = witness.map(|w| witness::read(w).unwrap());
    audit::verify_witnessed(&app.pool, 1, &trusted, lines.as_deref(), |_| {})
        .await
        .unwrap()
}

#[tokio::test]
async fn deleted_checkpoint_rows_and_a_rewrite_after_them_are_named_by_the_witness() {
    let file = witness_file();
    let app = spawn_app_with(|c| {
        with_key(c);
        c.audit_witness_file = Some(file.clone());
    })
    .await;
    let first = signed_history(&app).await;
    app.confirmed_order().await;
    let second = app.post(Admin, "/v1/audit/checkpoints", json!({})).await;
    second.assert_status(201);
    let head = app.event_count().await;
    assert_eq!(second.body["position"], head);
    let lines = witness::read(&file).unwrap();
    let positions: Vec<i64> = lines.iter().map(|c| c.position).collect();
    assert_eq!(
        positions,
        [first, head],
        "each signed checkpoint, witnessed once"
    );
    let clean = verify(&app, Some(&file)).await;
    assert!(clean.intact(), "{:?}", clean.signatures);
    assert_eq!(clean.signatures.as_ref().unwrap().witnessed, Some(2));

    // The newest checkpoint's row goes: the chain still holds its hash.
    behind_the_back(
        &app.pool,
        &[&format!(
            "DELETE FROM audit.checkpoints WHERE position = {head}"
        )],
    )
    .await;
    let deleted = verify(&app, Some(&file)).await;
    let faults = &deleted.signatures.as_ref().unwrap().faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].checkpoint.id, None);
    assert_eq!(faults[0].checkpoint.position, head);
    assert_eq!(faults[0].contradiction, Contradiction::Unrecorded);

    // Then the events after the remaining checkpoint are rewritten, every hash recomputed.
    behind_the_back(
        &app.pool,
        &[&format!(
            "UPDATE event_store.events SET payload = payload || '{{\"forged\": true}}'
              WHERE global_position = {}",
            first + 1
        )],
    )
    .await;
    rehash_everything(&app.pool).await;

    // The database alone: intact, covered only up to the first checkpoint.
    let alone = verify(&app, None).await;
    assert!(alone.intact(), "{:?}", alone.signatures);
    assert_eq!(alone.signatures.as_ref().unwrap().covered, Some(first));
    assert!(
        alone.coverage().contains(&format!(
            "events after position {first}, the last signed checkpoint, are protected by the chain only"
        )),
        "{}",
        alone.coverage()
    );

    // With the witness: the deleted checkpoint contradicts the rewritten chain.
    let witnessed = verify(&app, Some(&file)).await;
    assert_eq!(witnessed.broken_count, 0, "the forger's chain links");
    let faults = &witnessed.signatures.as_ref().unwrap().faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].checkpoint.id, None);
    assert_eq!(faults[0].checkpoint.position, head);
    assert!(
        matches!(
            faults[0].contradiction,
            Contradiction::Rewritten {
                since: Some(p),
                ..
            } if p == first
        ),
        "{:?}",
        faults[0]
    );

    // The CLI: passes without the witness, fails naming the checkpoint with it.
    let public = ordo_commands::checkpoint::public_key_text(&signer(KEY).public_key());
    let env = [("ORDO_AUDIT_PUBLIC_KEY", public.as_str())];
    let (ok, out) = ordo(&app, &["audit", "verify"], &env);
    assert!(ok, "{out}");
    let path = file.to_str().unwrap();
    let (ok, out) = ordo(&app, &["audit", "verify", "--witness", path], &env);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "CHECKPOINT witnessed checkpoint (position {head}, signed"
        )) && out.contains("not in the database")
            && out.contains("were rewritten"),
        "{out}"
    );
    assert!(out.contains("2 witnessed checkpoint(s) checked"), "{out}");
    // Without a public key, the witness's own keys are trusted.
    let (ok, out) = ordo(&app, &["audit", "verify", "--witness", path], &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("were rewritten"), "{out}");
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn audit_checkpoint_prints_the_witness_line_and_appends_it_when_a_file_is_set() {
    let app = spawn_app_with(with_key).await;
    app.confirmed_order().await;
    let head = app.event_count().await;

    // No witness file: the line is printed all the same.
    let (ok, out) = ordo(
        &app,
        &["audit", "checkpoint"],
        &[("ORDO_AUDIT_SIGNING_KEY", KEY)],
    );
    assert!(ok, "{out}");
    let printed: witness::Line = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(printed.position, head);
    assert_eq!(
        printed.public_key,
        ordo_commands::checkpoint::public_key_text(&signer(KEY).public_key())
    );

    // With one: a new checkpoint is appended to it, and kept apart it verifies.
    app.confirmed_order().await;
    let file = witness_file();
    let path = file.to_str().unwrap();
    let env = [
        ("ORDO_AUDIT_SIGNING_KEY", KEY),
        ("ORDO_AUDIT_WITNESS_FILE", path),
    ];
    let (ok, out) = ordo(&app, &["audit", "checkpoint"], &env);
    assert!(ok, "{out}");
    let kept = std::fs::read_to_string(&file).unwrap();
    assert_eq!(kept.trim_end(), out.lines().last().unwrap());
    let (ok, out) = ordo(&app, &["audit", "checkpoint"], &env);
    assert!(ok && out.contains("already signed"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        kept,
        "an unchanged head is not witnessed twice"
    );
    let report = verify(&app, Some(&file)).await;
    assert!(report.intact(), "{:?}", report.signatures);
    std::fs::remove_file(&file).unwrap();
}
