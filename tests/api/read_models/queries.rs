//! The read models over HTTP: orders, payments and the customer 360, lists with cursors,
//! read-your-writes with `min_position`, projection status.

use ordo_api::Role::{Analyst, Storefront, Support};
use serde_json::json;

use crate::helpers::{order_body, spawn_app, spawn_app_with, spawn_app_without_process_manager};

#[tokio::test]
async fn the_customer_360_counts_orders_spending_and_notes() {
    // It pins the delivered order's version, which the process manager's payment status
    // events would move.
    let app = spawn_app_without_process_manager().await;
    let customer = app.register_customer().await;
    // Three orders of 2999 EUR: one delivered and paid, one cancelled, one open.
    let delivered = app.place_order(&customer).await;
    let cancelled = app.place_order(&customer).await;
    let _open = app.place_order(&customer).await;
    app.confirm(&delivered).await;
    let payment = app.captured_payment(&delivered, 2999).await;
    app.ship(&delivered).await;
    app.deliver(&delivered).await;
    app.refund(&payment, 1000, "scratch").await;
    app.cancel(&cancelled, "duplicate").await;
    app.post(
        Support,
        &format!("/v1/customers/{customer}/notes"),
        json!({"text": "VIP"}),
    )
    .await
    .assert_status(201);
    // A USD order for the same customer.
    let mut usd = order_body(&customer);
    usd["currency"] = json!("USD");
    usd["lines"] = json!([{"sku": "X", "name": "X", "quantity": 1, "unit_price": 100}]);
    app.post(Storefront, "/v1/orders", usd)
        .await
        .assert_status(201);

    let view = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    view.assert_status(200);
    let c = &view.body;
    assert_eq!(c["order_count"], 4);
    assert_eq!(c["cancelled_count"], 1);
    assert_eq!(c["open_orders"], 2);
    assert_eq!(c["notes_count"], 1);
    assert_eq!(c["name"], "Ada Lovelace");
    assert!(c["first_order_at"].is_string() && c["last_order_at"].is_string());
    assert!(c["first_order_at"].as_str() < c["last_order_at"].as_str());
    assert_eq!(
        c["spent"]["EUR"],
        json!({"gross": 5998, "refunded": 1000, "net": 4998, "average_order_value": 2999})
    );
    assert_eq!(
        c["spent"]["USD"],
        json!({"gross": 100, "refunded": 0, "net": 100, "average_order_value": 100})
    );

    let order = app
        .get_fresh(Storefront, &format!("/v1/orders/{delivered}"))
        .await;
    assert_eq!(order.body["status"], "delivered");
    assert_eq!(order.body["payment_status"], "partially_refunded");
    assert_eq!(order.body["fulfillment_status"], "delivered");
    assert_eq!(order.body["total"], 2999);
    assert_eq!(order.body["line_count"], 2);
    assert_eq!(order.body["version"], 4);
    assert_eq!(order.header("etag"), Some("\"4\""));
}

#[tokio::test]
async fn orders_are_listed_by_customer_and_status_with_a_cursor() {
    let app = spawn_app().await;
    let ada = app.register_customer().await;
    let bob = app.register_customer().await;
    let mut ada_orders = Vec::new();
    for _ in 0..5 {
        ada_orders.push(app.place_order(&ada).await);
    }
    app.place_order(&bob).await;
    app.confirm(&ada_orders[1]).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/orders?customer_id={ada}&limit=2"),
            Some(c) => format!("/v1/orders?customer_id={ada}&limit=2&cursor={c}"),
        };
        let page = app.get_fresh(Storefront, &path).await;
        page.assert_status(200);
        for item in page.body["items"].as_array().unwrap() {
            assert_eq!(item["customer_id"], ada.as_str());
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected = ada_orders.clone();
    expected.sort();
    assert_eq!(
        seen, expected,
        "every order of the customer exactly once, in id order"
    );

    let confirmed = app
        .get_fresh(
            Storefront,
            &format!("/v1/orders?customer_id={ada}&status=confirmed"),
        )
        .await;
    let items = confirmed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ada_orders[1].as_str());

    app.get(Storefront, "/v1/orders?status=lost")
        .await
        .assert_problem(400, "bad-query");
    app.get(Storefront, "/v1/orders?customer_id=nope")
        .await
        .assert_problem(400, "bad-query");
    app.get(Storefront, "/v1/orders?limit=0")
        .await
        .assert_problem(400, "bad-query");
}

/// A query parameter given twice is refused, naming it, on every kind of read: a list
/// filters on one value per parameter, and before this the last value won in silence, so
/// `?status=placed&status=confirmed` listed the confirmed orders only.
#[tokio::test]
async fn a_query_parameter_given_twice_is_refused_naming_it() {
    let app = spawn_app().await;
    let ada = app.register_customer().await;
    let order = app.place_order(&ada).await;
    for path in [
        "/v1/orders?status=placed&status=confirmed".to_owned(),
        format!("/v1/orders?customer_id={ada}&limit=10&customer_id={ada}"),
        format!("/v1/orders/{order}?min_position=1&min_position=1"),
        format!("/v1/payments?order_id={order}&order_id={order}"),
        format!("/v1/orders/{order}/history?limit=5&limit=5"),
    ] {
        let answer = app.get(Support, &path).await;
        answer.assert_problem(400, "bad-query");
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(detail.contains("given more than once"), "{path}: {detail}");
    }
    let answer = app
        .get(Support, "/v1/orders?status=placed&status=confirmed")
        .await;
    assert!(answer.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("status:"));
    // Each parameter once still reads.
    app.get(
        Support,
        &format!("/v1/orders?customer_id={ada}&status=placed"),
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn payments_are_listed_by_order_and_customers_found_by_email() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let first = app.payment(&order, 1000).await;
    let second = app.authorized_payment(&order, 1999).await;
    let list = app
        .get_fresh(Storefront, &format!("/v1/payments?order_id={order}"))
        .await;
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    let authorized = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == second.as_str())
        .unwrap();
    assert_eq!(authorized["status"], "authorized");
    assert_eq!(authorized["authorized"], 1999);
    assert_eq!(authorized["amount"], 1999);
    assert_eq!(authorized["currency"], "EUR");

    app.post(
        Storefront,
        "/v1/customers",
        json!({"email": "Grace@Example.com", "name": "Grace Hopper"}),
    )
    .await
    .assert_status(201);
    let found = app
        .get_fresh(Support, "/v1/customers?email=grace@example.com")
        .await;
    let items = found.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "Grace Hopper");
    assert_eq!(items[0]["order_count"], 0);
}

#[tokio::test]
async fn a_read_waits_for_its_position_and_never_answers_stale() {
    // Generous, so the fresh read never races a busy machine; the stale read below costs
    // the full wait.
    let app = spawn_app_with(|c| {
        c.read_wait_secs = 5;
    })
    .await;
    let customer = app.register_customer().await;
    let placed = app
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await;
    let order = placed.id();
    let position = placed.body["position"].as_i64().unwrap();

    // Read your write: the order is there as soon as the read returns.
    let read = app
        .get(
            Storefront,
            &format!("/v1/orders/{order}?min_position={position}"),
        )
        .await;
    read.assert_status(200);
    assert_eq!(read.body["status"], "placed");

    // A position no event has could never be reached: 400 at once.
    app.get(
        Storefront,
        &format!("/v1/orders/{order}?min_position={}", position + 1000),
    )
    .await
    .assert_problem(400, "bad-query");
    app.get(Storefront, &format!("/v1/orders/{order}?min_position=-1"))
        .await
        .assert_problem(400, "bad-query");

    // A committed event the projection has not applied (no projector runs here) cannot be
    // served: 503, not older data.
    let unprojected = spawn_app_with(|c| {
        c.roles = vec![ordo::ProcessRole::Api];
        c.read_wait_secs = 1;
    })
    .await;
    let customer = unprojected.register_customer().await;
    let position = unprojected
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await
        .body["position"]
        .as_i64()
        .unwrap();
    let behind = unprojected
        .get(Storefront, &format!("/v1/orders?min_position={position}"))
        .await;
    behind.assert_problem(503, "projection-behind");
    assert_eq!(behind.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn projection_status_shows_position_and_lag() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    app.get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await
        .assert_status(200);
    app.get_fresh(Storefront, &format!("/v1/payments?order_id={order}"))
        .await
        .assert_status(200);
    app.get_fresh(Support, "/v1/customers")
        .await
        .assert_status(200);

    let status = app.get(Analyst, "/v1/projections").await;
    status.assert_status(200);
    let items = status.body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "payments", "customers"]);
    for item in items {
        assert_eq!(item["state"], "running", "{item}");
        assert_eq!(item["position"], app.last_position());
        assert_eq!(item["lag_events"], 0);
        assert_eq!(item["last_error"], serde_json::Value::Null);
        assert_eq!(item["rebuild"], serde_json::Value::Null);
    }
    app.get(Storefront, "/v1/projections")
        .await
        .assert_problem(403, "forbidden");
    app.post(Analyst, "/v1/projections/nope/rebuild", json!({}))
        .await
        .assert_problem(404, "not-found");
    app.post(Support, "/v1/projections/orders/rebuild", json!({}))
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn a_customer_is_found_by_a_clear_email_through_its_index_not_by_reading_every_customer() {
    use ordo_projections::queries::{customers, ByEmail};
    let app = spawn_app_with(|c| c.roles = vec![ordo::ProcessRole::Api]).await;
    sqlx::raw_sql(&ordo_projections::Projection::Customers.ddl("projections"))
        .execute(&app.pool)
        .await
        .unwrap();
    // 100,000 customers in clear (encryption off) and 1,000 sealed ones.
    sqlx::query(
        "INSERT INTO projections.customers (id, email, name, order_count, cancelled_count,
                open_orders, notes_count, sealed)
         SELECT gen_random_uuid(), CASE WHEN g <= 100000 THEN 'c' || g || '@example.com'
                                        ELSE encode(sha256(g::text::bytea), 'base64') END,
                'Customer ' || g, 0, 0, 0, 0, g > 100000
           FROM generate_series(1, 101000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE projections.customers")
        .execute(&app.pool)
        .await
        .unwrap();

    let (found, reads) = crate::helpers::reads_of(&app, "projections.customers", async |one| {
        let keys = ordo_commands::privacy::Keyring::new(one.clone(), None);
        let email = ByEmail::Clear("C7777@Example.com");
        customers(one, &keys, None, Some(email), None, 20)
            .await
            .unwrap()
    })
    .await;
    let fetched = reads.scanned + reads.fetched;
    assert_eq!(
        found
            .items
            .iter()
            .map(|c| c.name.as_deref())
            .collect::<Vec<_>>(),
        [Some("Customer 7777")]
    );
    assert!(
        fetched <= 5,
        "finding one customer by e-mail read {fetched} of 101,000 customers"
    );
}
