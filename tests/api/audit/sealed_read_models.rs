//! Read models hold no clear personal data (ADR 0020): the customer 360 keeps the e-mail and
//! name sealed with the customer's data key, authorized reads open them, erasure leaves
//! nothing readable, a rebuild seals again, and `ordo privacy migrate` seals rows written in
//! clear, once.

use ordo_api::Role::{Admin, Storefront, Support};
use ordo_commands::privacy::Keyring;
use serde_json::{json, Value};

use crate::audit::privacy::{spawn_encrypting_app, EMAIL, MASTER_KEY, NAME};
use crate::helpers::TestApp;
use crate::read_models::rebuilds::wait_until_rebuilt;

/// The customer's read-model row as stored: every column, as JSON.
async fn raw_row(app: &TestApp, customer: &str) -> Value {
    sqlx::query_scalar("SELECT to_jsonb(t) FROM projections.customers t WHERE id = $1::uuid")
        .bind(customer)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Every read-model and worker table that could hold a customer's personal data, as text.
async fn raw_tables(app: &TestApp) -> String {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) FROM projections.customers t
         UNION ALL SELECT to_jsonb(t) FROM projections.orders t
         UNION ALL SELECT to_jsonb(t) FROM notification.customers t
         UNION ALL SELECT to_jsonb(t) FROM notification.notifications t",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    Value::from(rows).to_string()
}

fn holds_clear(text: &str) -> bool {
    text.contains(EMAIL) || text.contains(NAME)
}

async fn register(app: &TestApp) -> String {
    let customer = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": EMAIL, "name": NAME}),
        )
        .await
        .assert_status(201)
        .id();
    app.get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await
        .assert_status(200);
    customer
}

/// Erase `customer`: their e-mail and name no longer open, even before the read model has
/// `customer.erased`; once it has, its columns are empty and no table holds them.
async fn erase_and_find_nothing(app: &TestApp, customer: &str) {
    app.post(Admin, &format!("/v1/customers/{customer}/erase"), json!({}))
        .await
        .assert_status(200);
    let at_once = app.get(Support, &format!("/v1/customers/{customer}")).await;
    assert_eq!(at_once.body["email"], Value::Null, "{:#?}", at_once.body);
    let erased = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(
        (&erased.body["email"], &erased.body["name"]),
        (&Value::Null, &Value::Null)
    );
    let row = raw_row(app, customer).await;
    assert_eq!(
        (&row["email"], &row["name"]),
        (&Value::Null, &Value::Null),
        "{row}"
    );
    assert!(!holds_clear(&raw_tables(app).await));
}

#[tokio::test]
async fn the_customer_read_model_keeps_personal_data_sealed_and_authorized_reads_open_it() {
    let app = spawn_encrypting_app().await;
    let customer = register(&app).await;

    // Stored sealed...
    let row = raw_row(&app, &customer).await;
    assert_eq!(row["sealed"], true, "{row}");
    assert!(!holds_clear(&row.to_string()), "{row}");
    assert!(row["email"].is_string() && row["name"].is_string());

    // ...and answered in clear, one by one, as a page and by e-mail.
    let one = app.get(Support, &format!("/v1/customers/{customer}")).await;
    assert_eq!(
        (one.body["email"].as_str(), one.body["name"].as_str()),
        (Some(EMAIL), Some(NAME))
    );
    assert!(one.body.get("sealed").is_none(), "{:#?}", one.body);
    let page = app.get(Support, "/v1/customers").await;
    assert_eq!(page.body["items"][0]["email"], EMAIL);
    let found = app
        .get(
            Storefront,
            &format!("/v1/customers?email={}", EMAIL.to_uppercase()),
        )
        .await;
    assert_eq!(found.body["items"][0]["id"], customer.as_str());
    assert_eq!(found.body["items"][0]["name"], NAME);

    // A rebuild seals again.
    app.post(Admin, "/v1/projections/customers/rebuild", json!({}))
        .await
        .assert_status(202);
    wait_until_rebuilt(&app).await;
    let rebuilt = raw_row(&app, &customer).await;
    assert_eq!(rebuilt["sealed"], true, "{rebuilt}");
    assert!(!holds_clear(&rebuilt.to_string()), "{rebuilt}");
    let one = app.get(Support, &format!("/v1/customers/{customer}")).await;
    assert_eq!(one.body["email"], EMAIL);

    // Erased: the key is gone at once, the columns once the read model has the event.
    erase_and_find_nothing(&app, &customer).await;
}

/// Run `ordo privacy migrate` with the test master key; it reports `n` keys created and
/// `n` rows sealed.
fn migrated(app: &TestApp, n: u64) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["privacy", "migrate"])
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_MASTER_KEY", MASTER_KEY)
        .env("ORDO_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    for line in [
        format!("data keys created for customers registered before encryption: {n}\n"),
        format!("read-model rows sealed: {n} "),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in {stdout}");
    }
}

#[tokio::test]
async fn migrate_seals_rows_of_customers_registered_before_encryption_once() {
    // A customer registered before encryption: clear in the log, no data key, and so a
    // clear read-model row even though this app encrypts.
    let app = spawn_encrypting_app().await;
    let clear =
        ordo_commands::Commands::with_keys(app.pool.clone(), Keyring::new(app.pool.clone(), None));
    let id = uuid::Uuid::now_v7();
    let committed = clear
        .register_customer(
            ordo_domain::customer::RegisterCustomer {
                customer_id: id,
                email: ordo_domain::values::Email::parse(EMAIL).unwrap(),
                name: ordo_domain::values::Text::parse(NAME).unwrap(),
                phone: None,
                registered_at: chrono::Utc::now(),
            },
            &crate::audit::privacy::test_metadata(),
        )
        .await
        .unwrap();
    app.note_position(committed.position);
    let customer = id.to_string();
    app.get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await
        .assert_status(200);
    let row = raw_row(&app, &customer).await;
    assert_eq!(
        (row["email"].as_str(), row["sealed"].as_bool()),
        (Some(EMAIL), Some(false))
    );

    // Migrate: a data key for the customer, the row sealed with it.
    migrated(&app, 1);
    let row = raw_row(&app, &customer).await;
    assert_eq!(row["sealed"], true, "{row}");
    assert!(!holds_clear(&raw_tables(&app).await));
    let one = app.get(Support, &format!("/v1/customers/{customer}")).await;
    assert_eq!(
        (one.body["email"].as_str(), one.body["name"].as_str()),
        (Some(EMAIL), Some(NAME))
    );

    // Again: nothing left to seal.
    migrated(&app, 0);

    // Erasing them now destroys the key their row needs.
    erase_and_find_nothing(&app, &customer).await;
}
