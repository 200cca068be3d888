//! Crypto-shredding (ADR 0020): personal fields sealed in the log, opened for authorized
//! readers, and unreadable everywhere once the customer is erased.

use ordo::Secret;
use ordo_api::Role::{Admin, Storefront, Support};
use ordo_commands::privacy::{KeyState, Keyring, MasterKey, MasterKeys};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::read_models::rebuilds::wait_until_rebuilt;

/// A development master key (base64 of 32 bytes), for tests only.
pub const MASTER_KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

pub const EMAIL: &str = "grace.hopper@example.com";
pub const NAME: &str = "Grace Hopper";
pub const PHONE: &str = "+1 555 0100";
pub const NOTE: &str = "asked for invoices by fax";
pub const STREET: &str = "7 Cobol Lane";

pub async fn spawn_encrypting_app() -> TestApp {
    spawn_app_with(|c| c.master_key = Some(Secret::new(MASTER_KEY))).await
}

/// A customer with a phone, a note and an order with a shipping address.
pub async fn customer_with_personal_data(app: &TestApp) -> (String, String) {
    let customer = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": EMAIL, "name": NAME, "phone": PHONE}),
        )
        .await
        .assert_status(201)
        .id();
    app.post(
        Support,
        &format!("/v1/customers/{customer}/notes"),
        json!({"text": NOTE}),
    )
    .await
    .assert_status(201);
    let mut order = crate::helpers::order_body(&customer);
    order["shipping_address"]["line1"] = json!(STREET);
    let order = app
        .post(Storefront, "/v1/orders", order)
        .await
        .assert_status(201)
        .id();
    (customer, order)
}

/// Every personal value of [`customer_with_personal_data`].
pub const PERSONAL: [&str; 5] = [EMAIL, NAME, PHONE, NOTE, STREET];

/// The personal values `text` contains.
pub fn leaked(text: &str) -> Vec<&'static str> {
    PERSONAL
        .into_iter()
        .filter(|p| text.contains(p) || text.contains(&p.to_lowercase()))
        .collect()
}

/// Every stored event's payload, as text.
pub async fn stored_payloads(app: &TestApp) -> String {
    let rows: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM event_store.events ORDER BY global_position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    Value::from(rows).to_string()
}

async fn erase(app: &TestApp, customer: &str) -> crate::helpers::Resp {
    app.post(Admin, &format!("/v1/customers/{customer}/erase"), json!({}))
        .await
}

pub async fn assert_chain_intact(app: &TestApp) {
    let report = ordo_commands::audit::verify(&app.pool, 1, &[], |_| {})
        .await
        .unwrap();
    assert!(report.intact(), "{report:?}");
    assert!(report.checked > 0);
}

#[tokio::test]
async fn personal_fields_are_stored_sealed_and_read_in_clear_by_authorized_readers() {
    let app = spawn_encrypting_app().await;
    let (customer, order) = customer_with_personal_data(&app).await;

    let stored = stored_payloads(&app).await;
    assert!(
        leaked(&stored).is_empty(),
        "clear text in the log: {stored}"
    );
    assert!(stored.contains("\"sealed\""));

    let history = app
        .get(Support, &format!("/v1/customers/{customer}/history"))
        .await;
    history.assert_status(200);
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items[0]["schema_version"], 2);
    assert_eq!(items[0]["data"]["email"], EMAIL);
    assert_eq!(items[0]["data"]["name"], NAME);
    assert_eq!(items[0]["data"]["phone"], PHONE);
    assert_eq!(items[1]["data"]["text"], NOTE);
    let state = app
        .get(Support, &format!("/v1/customers/{customer}/state"))
        .await;
    assert_eq!(state.body["email"], EMAIL);
    assert_eq!(state.body["notes"][0]["text"], NOTE);
    let order_state = app.get(Support, &format!("/v1/orders/{order}/state")).await;
    assert_eq!(order_state.body["shipping_address"]["line1"], STREET);

    let view = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    view.assert_status(200);
    assert_eq!(view.body["email"], EMAIL);
    assert_eq!(view.body["name"], NAME);
    // The lookup by e-mail goes through the blind index, case-insensitively.
    let found = app
        .get_fresh(Storefront, "/v1/customers?email=Grace.Hopper@Example.com")
        .await;
    assert_eq!(found.body["items"][0]["id"], customer.as_str());
    let digests: i64 = sqlx::query_scalar("SELECT count(*) FROM privacy.email_index")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(digests, 1);
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn erasure_shows_erased_everywhere_and_a_rebuild_does_not_bring_it_back() {
    let app = spawn_encrypting_app().await;
    let (customer, order) = customer_with_personal_data(&app).await;
    let other = app.register_customer().await;
    app.get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await
        .assert_status(200);

    let erased = erase(&app, &customer).await;
    erased.assert_status(200);
    assert_eq!(erased.body["id"], customer.as_str());
    let keys: Vec<(Option<Vec<u8>>, bool)> = sqlx::query_as(
        "SELECT wrapped_key, erased_at IS NOT NULL FROM privacy.customer_keys WHERE customer_id = $1::uuid",
    )
    .bind(&customer)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys, vec![(None, true)], "the data key is destroyed");

    let history = app
        .get(Support, &format!("/v1/customers/{customer}/history"))
        .await;
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items[0]["data"]["email"], "[erased]");
    assert_eq!(items[0]["data"]["name"], "[erased]");
    assert_eq!(items[0]["data"]["phone"], "[erased]");
    assert_eq!(items[1]["data"]["text"], "[erased]");
    assert_eq!(items[2]["type"], "customer.erased");
    assert!(leaked(&history.body.to_string()).is_empty());
    let state = app
        .get(Support, &format!("/v1/customers/{customer}/state"))
        .await;
    assert_eq!(state.body["email"], "[erased]");
    assert_eq!(state.body["notes"][0]["text"], "[erased]");
    assert!(state.body["erased_at"].is_string());
    let order_history = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    assert_eq!(
        order_history.body["items"][0]["data"]["shipping_address"],
        "[erased]"
    );
    let order_state = app.get(Support, &format!("/v1/orders/{order}/state")).await;
    assert_eq!(order_state.body["shipping_address"], "[erased]");
    assert_eq!(order_state.body["total"], 2999, "the rest is unchanged");

    let view = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(view.body["email"], Value::Null);
    assert_eq!(view.body["name"], Value::Null);
    assert_eq!(view.body["order_count"], 1, "counts are not personal data");
    let found = app
        .get_fresh(Storefront, &format!("/v1/customers?email={EMAIL}"))
        .await;
    assert_eq!(found.body["items"], json!([]));

    // A rebuild of every read model from the log does not bring the clear text back.
    for name in ["customers", "orders"] {
        app.post(Admin, &format!("/v1/projections/{name}/rebuild"), json!({}))
            .await
            .assert_status(202);
    }
    wait_until_rebuilt(&app).await;
    let rows: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(c) FROM projections.customers c")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let rows = Value::from(rows).to_string();
    assert!(leaked(&rows).is_empty(), "{rows}");
    let other_view = app.get(Support, &format!("/v1/customers/{other}")).await;
    assert_eq!(
        other_view.body["name"], "Ada Lovelace",
        "others keep theirs"
    );

    assert_chain_intact(&app).await;
    let mismatches = ordo_projections::check::check(&app.pool).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn erasing_twice_answers_the_same_and_nothing_personal_is_written_after() {
    let app = spawn_encrypting_app().await;
    let (customer, _) = customer_with_personal_data(&app).await;
    let first = erase(&app, &customer).await;
    first.assert_status(200);
    let again = erase(&app, &customer).await;
    again.assert_status(200);
    assert_eq!(again.body, first.body);
    let types = app.event_types("customer", &customer).await;
    assert_eq!(types.iter().filter(|t| *t == "customer.erased").count(), 1);

    app.post(
        Support,
        &format!("/v1/customers/{customer}/notes"),
        json!({"text": "another"}),
    )
    .await
    .assert_problem(409, "customer-erased");
    app.post(
        Storefront,
        "/v1/orders",
        crate::helpers::order_body(&customer),
    )
    .await
    .assert_problem(409, "customer-erased");
}

#[tokio::test]
async fn only_admins_erase_and_an_unknown_customer_is_404() {
    let app = spawn_encrypting_app().await;
    let customer = app.register_customer().await;
    app.post(
        Support,
        &format!("/v1/customers/{customer}/erase"),
        json!({}),
    )
    .await
    .assert_problem(403, "forbidden");
    let unknown = uuid::Uuid::now_v7();
    erase(&app, &unknown.to_string())
        .await
        .assert_problem(404, "not-found");
    erase(&app, "not-a-uuid")
        .await
        .assert_problem(404, "not-found");
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM privacy.customer_keys WHERE erased_at IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys, 0, "nothing was erased");
}

#[tokio::test]
async fn without_a_master_key_data_stays_clear_readyz_says_so_and_erasure_masks_it() {
    let app = spawn_app().await;
    let ready = app.get(Support, "/readyz").await;
    ready.assert_status(200);
    assert_eq!(ready.body["checks"]["encryption"]["status"], "off");

    let (customer, order) = customer_with_personal_data(&app).await;
    let stored = stored_payloads(&app).await;
    assert!(stored.contains(EMAIL) && stored.contains(STREET));

    erase(&app, &customer).await.assert_status(200);
    let history = app
        .get(Support, &format!("/v1/customers/{customer}/history"))
        .await;
    assert!(
        leaked(&history.body.to_string()).is_empty(),
        "{:#}",
        history.body
    );
    let order_state = app.get(Support, &format!("/v1/orders/{order}/state")).await;
    assert_eq!(order_state.body["shipping_address"], "[erased]");
    let view = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(view.body["email"], Value::Null);
    // The rows themselves could not change: the log still holds them, masked on every read.
    assert!(stored_payloads(&app).await.contains(EMAIL));
    assert_chain_intact(&app).await;

    let encrypting = spawn_encrypting_app().await;
    let ready = encrypting.get(Support, "/readyz").await;
    assert_eq!(ready.body["checks"]["encryption"]["status"], "on");
    assert_eq!(ready.body["checks"]["encryption"]["master_key_version"], 1);
}

#[tokio::test]
async fn sealed_events_match_their_released_schemas() {
    let app = spawn_encrypting_app().await;
    customer_with_personal_data(&app).await;
    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT event_type, event_version, payload FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (event_type, version, payload) in rows {
        let file = format!(
            "{}/schemas/events/{event_type}.v{version}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{event_type} v{version}: {errors:?}");
    }
}

/// The metadata of a command run directly (not over the API) by a test.
pub fn test_metadata() -> ordo_commands::CommandMetadata {
    ordo_commands::CommandMetadata {
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: uuid::Uuid::now_v7(),
        actor: ordo_commands::Actor {
            key_id: None,
            name: "test".into(),
            role: "support".into(),
        },
        request_id: "r".into(),
        idempotency_key: None,
        idempotent: None,
        traceparent: None,
        channel: None,
    }
}

fn keyring(app: &TestApp, version: i32, key: &str, previous: &str) -> Keyring {
    let master = MasterKeys::new(
        MasterKey::parse(version, key).unwrap(),
        MasterKeys::parse_previous(previous).unwrap(),
    )
    .unwrap();
    Keyring::new(app.pool.clone(), Some(master))
}

#[tokio::test]
async fn migrate_indexes_customers_registered_in_clear_and_rewrap_retires_an_old_master_key() {
    // Registered before encryption: clear in the log, no index.
    let app = spawn_app().await;
    let (customer, _) = customer_with_personal_data(&app).await;
    let v1 = keyring(&app, 1, MASTER_KEY, "");
    let report = ordo_commands::privacy::migrate(&v1).await.unwrap();
    assert_eq!(
        report.keys_created, 1,
        "a key for the customer registered in clear"
    );
    assert_eq!(report.indexed, 1);
    assert_eq!(
        report.clear_events, 3,
        "registered, note and order, in clear"
    );
    assert_eq!(report.clear_events_of_erased, 0);
    let found = v1.customers_by_email(&EMAIL.to_uppercase()).await.unwrap();
    assert_eq!(found, Some(vec![customer.parse().unwrap()]));
    let again = ordo_commands::privacy::migrate(&v1).await.unwrap();
    assert_eq!((again.keys_created, again.indexed), (0, 0));

    // A key wrapped by master key 1, then rotated to 2 with 1 still given, re-wrapped.
    let sealed = app.register_customer().await;
    let commands = ordo_commands::Commands::with_keys(app.pool.clone(), v1.clone());
    let note = ordo_domain::customer::CustomerCommand::AddNote {
        note_id: uuid::Uuid::now_v7(),
        text: ordo_domain::values::Text::parse(NOTE).unwrap(),
        at: chrono::Utc::now(),
    };
    commands
        .customer(sealed.parse().unwrap(), None, note, &test_metadata())
        .await
        .unwrap();
    let other_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let v2 = keyring(&app, 2, other_key, &format!("1:{MASTER_KEY}"));
    assert_eq!(
        v2.rewrap().await.unwrap(),
        2,
        "the key migrate created and the one sealing the note"
    );
    let v2_alone = keyring(&app, 2, other_key, "");
    let id: uuid::Uuid = sealed.parse().unwrap();
    let states = v2_alone.states(&[id]).await.unwrap();
    assert!(matches!(states[&id], KeyState::Key(_)), "{states:?}");
    let v1_alone = keyring(&app, 1, MASTER_KEY, "");
    assert_eq!(
        v1_alone.states(&[id]).await.unwrap()[&id],
        KeyState::Unreadable
    );
}

/// The master key versions `customer` has a blind index entry under.
async fn indexed_versions(app: &TestApp, customer: uuid::Uuid) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT master_version FROM privacy.email_index WHERE customer_id = $1 ORDER BY 1",
    )
    .bind(customer)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn lookup_by_email_survives_a_master_key_rotation_and_the_old_key_can_be_retired() {
    // Registered (sealed, indexed) under master key 1.
    let app = spawn_encrypting_app().await;
    let (customer, _) = customer_with_personal_data(&app).await;
    let id: uuid::Uuid = customer.parse().unwrap();
    let gone = app.register_customer().await;
    erase(&app, &gone).await.assert_status(200);
    let other_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    // Rotated to 2 with 1 still given: found through the digest under 1.
    let rotated = keyring(&app, 2, other_key, &format!("1:{MASTER_KEY}"));
    assert_eq!(
        rotated.customers_by_email(EMAIL).await.unwrap(),
        Some(vec![id])
    );
    let v2_alone = keyring(&app, 2, other_key, "");
    assert_eq!(
        v2_alone.customers_by_email(EMAIL).await.unwrap(),
        Some(vec![]),
        "before the re-index, nothing is indexed under 2"
    );

    // `ordo privacy rewrap` re-wraps the data key and re-indexes under 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["privacy", "rewrap"])
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_MASTER_KEY", other_key)
        .env("ORDO_MASTER_KEY_VERSION", "2")
        .env("ORDO_PREVIOUS_MASTER_KEYS", format!("1:{MASTER_KEY}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        indexed_versions(&app, id).await,
        [2],
        "the entry under 1 is dropped"
    );
    let erased_entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM privacy.email_index WHERE customer_id = $1")
            .bind(gone.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(erased_entries, 0, "an erased customer is not re-indexed");

    // Key 1 retired: still found, case-insensitively, and opened with key 2 alone.
    assert_eq!(
        v2_alone
            .customers_by_email(&EMAIL.to_uppercase())
            .await
            .unwrap(),
        Some(vec![id])
    );
    assert!(matches!(
        v2_alone.states(&[id]).await.unwrap()[&id],
        KeyState::Key(_)
    ));
    let v1_alone = keyring(&app, 1, MASTER_KEY, "");
    assert_eq!(
        v1_alone.customers_by_email(EMAIL).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        ordo_commands::privacy::reindex_emails(&v2_alone)
            .await
            .unwrap(),
        0,
        "nothing left to re-index"
    );
}

#[tokio::test]
async fn the_cli_erases_a_customer() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["customers", "erase", &customer])
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_MASTER_KEY", MASTER_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let types = app.event_types("customer", &customer).await;
    assert_eq!(types, ["customer.registered", "customer.erased"]);
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["customers", "erase", &customer])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert!(again.status.success(), "erasing again is harmless");
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["customers", "erase", &uuid::Uuid::now_v7().to_string()])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
}
