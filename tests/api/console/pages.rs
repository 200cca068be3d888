//! The console in a real headless Chromium: what support, storefront, analyst and admin keys
//! see and may do, CSRF and XSS; and its security headers without a browser.

use std::time::{Duration, Instant};

use ordo_api::Role::{Admin, Analyst, Storefront, Support};
use serde_json::{json, Value};

use crate::audit::privacy::{customer_with_personal_data, leaked, spawn_encrypting_app, NAME};
use crate::browser::{Browser, DEADLINE};
use crate::helpers::{read, spawn_app, Sale, TestApp};

/// A customer's order taken from placement to a partial refund through the API; returns
/// (order, payment).
pub async fn refunded_order(app: &TestApp, customer: &str) -> (String, String) {
    let Sale { order, payment } = app.delivered_order(customer).await;
    app.refund(&payment, 500, "mug chipped").await;
    (order, payment)
}

/// Wait until `sql` (with `$1` = `bind`) answers true.
pub async fn wait_for_sql(app: &TestApp, sql: &str, bind: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !sqlx::query_scalar::<_, bool>(sql)
        .bind(bind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "never true: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn support_follows_an_order_from_placement_to_refund_through_its_timeline() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let (order, payment) = refunded_order(&app, &customer).await;
    wait_for_sql(
        &app,
        "SELECT EXISTS (SELECT 1 FROM event_store.events WHERE aggregate_id = $1
            AND event_type = 'order.payment_status_changed' AND payload::text LIKE '%refunded%')",
        &order,
    )
    .await;

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Support).await;
    // The payment's id finds its order.
    browser.find("#q").await.send_keys(&payment).await.unwrap();
    browser.click("form.search button").await;
    browser.wait_for_text("h1", &order).await;

    let timeline = browser.text("ol.timeline").await;
    let expected = [
        "order.placed",
        "order.confirmed",
        "payment.created",
        "payment.authorized",
        "payment.captured",
        "order.shipped",
        "order.delivered",
        "payment.refunded",
    ];
    let at: Vec<usize> = expected
        .iter()
        .map(|t| {
            timeline
                .find(t)
                .unwrap_or_else(|| panic!("{t} missing from {timeline}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order: {timeline}"
    );
    assert!(
        timeline.contains("test-storefront (storefront)"),
        "actor shown"
    );
    assert!(
        timeline.contains("29.99 EUR") && timeline.contains("5.00 EUR"),
        "money in major units"
    );
    // What changed at the confirmation: the status, before and after.
    let confirmed = browser
        .js("return [...document.querySelectorAll('li.step')].find(li => li.querySelector('.type').textContent === 'order.confirmed').querySelector('table.changes').textContent")
        .await;
    let confirmed = confirmed.as_str().unwrap();
    assert!(
        confirmed.contains("status")
            && confirmed.contains("placed")
            && confirmed.contains("confirmed"),
        "{confirmed}"
    );
    // The process manager's step links to the payment event that caused it.
    let cause = browser.find("li.step a.cause").await;
    assert!(cause.text().await.unwrap().starts_with("payment."));
    let target = cause.attr("href").await.unwrap().unwrap();
    cause.click().await.unwrap();
    assert!(browser
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with(&target));
    // Times are shown in the browser's zone with UTC on hover.
    let title = browser
        .js("return document.querySelector('li.step time').title")
        .await;
    assert!(title.as_str().unwrap().ends_with("UTC"));

    // The state as it was at version 1: placed.
    browser.find("#version").await.send_keys("1").await.unwrap();
    browser.click("section form.inline button").await;
    let state = browser.wait_for_text("main", "At version 1").await;
    assert!(state.contains("placed"));
    browser.close().await;
}

#[tokio::test]
async fn a_storefront_key_is_refused_the_pages_support_sees() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Storefront).await;
    assert!(browser.text("main").await.contains("no console pages"));
    let links = browser
        .js("return document.querySelectorAll('header nav a').length")
        .await;
    assert_eq!(links, json!(0), "no page links for storefront");
    for path in [
        format!("/console/orders/{order}"),
        format!("/console/customers/{customer}"),
        format!("/console/search?q={order}"),
        "/console/workers".into(),
        "/console/keys".into(),
        "/console/analytics".into(),
    ] {
        browser.goto(&path).await;
        assert_eq!(browser.text("h1").await, "Not allowed", "{path}");
        assert!(browser
            .text("main")
            .await
            .contains("storefront role may not"));
    }
    // The API says the same to the same key.
    app.get(Storefront, &format!("/v1/orders/{order}/history"))
        .await
        .assert_problem(403, "forbidden");
    browser.close().await;
}

const XSS: &str = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";

#[tokio::test]
async fn an_xss_payload_in_a_customer_name_and_a_note_is_shown_as_text() {
    let app = spawn_app().await;
    let customer = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": "x@example.com", "name": XSS}),
        )
        .await
        .assert_status(201)
        .id();

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Support).await;
    browser
        .goto(&format!("/console/customers/{customer}"))
        .await;
    assert_eq!(browser.text("dd.name").await, XSS);
    browser.find("#note").await.send_keys(XSS).await.unwrap();
    browser.click("form.note button").await;
    browser.wait_for_text("ul.notes", "window.pwned").await;
    assert_eq!(browser.text("p.note").await, XSS);
    assert_eq!(
        browser.js("return window.pwned === undefined").await,
        json!(true)
    );
    assert_eq!(
        browser
            .js("return document.querySelectorAll('main script, main img').length")
            .await,
        json!(0)
    );
    browser.close().await;
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Support).await;
    browser
        .goto(&format!("/console/customers/{customer}"))
        .await;
    browser
        .find("#note")
        .await
        .send_keys("a note that never lands")
        .await
        .unwrap();
    browser
        .js("document.querySelector('form.note input[name=csrf]').remove(); return null")
        .await;
    browser.click("form.note button").await;
    browser.wait_for_text("h1", "Form expired").await;
    let notes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'customer.note_added'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(notes, 0);
    browser.close().await;
}

#[tokio::test]
async fn an_analyst_rebuilds_a_projection_and_watches_progress_reach_100_percent() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    for _ in 0..3 {
        app.place_order(&customer).await;
    }

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Analyst).await;
    browser.goto("/console/projections").await;
    // The rebuild's form answers with this same page: the mark tells the old one from it.
    browser
        .js("window.before_rebuild = true; return null")
        .await;
    browser.click("button[aria-label='Rebuild orders']").await;
    browser
        .wait_until(
            "return window.before_rebuild === undefined && document.readyState === 'complete' \
             && document.querySelector('h1')?.textContent.includes('Projections') === true",
            "the rebuild's form never brought the projections page back",
        )
        .await;
    // From here the page is never reloaded: progress arrives in the polled fragment.
    browser.js("window.stayed = true; return null").await;
    let row = browser
        .wait_for_text("tr[data-projection=orders]", "swapped in")
        .await;
    assert!(row.contains("100 %"), "{row}");
    browser
        .wait_until(
            "return document.querySelector('#projections').dataset.refreshed !== undefined",
            "the fragment was never refreshed",
        )
        .await;
    assert_eq!(
        browser.js("return window.stayed === true").await,
        json!(true)
    );
    assert!(browser
        .find("figure.chart svg polyline")
        .await
        .attr("points")
        .await
        .unwrap()
        .is_some());
    browser.close().await;
}

#[tokio::test]
async fn console_responses_carry_security_headers_and_a_strict_http_only_cookie() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = read(
        client
            .get(app.url("/console/sign-in"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    page.assert_status(200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    let cookie = page.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // No session: the console sends you to sign in, with the same headers.
    let home = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/console/sign-in");
    assert_eq!(home.headers()["x-frame-options"], "DENY");
    // A sign-in posted from elsewhere (no token cookie) is refused.
    let forged = client
        .post(app.url("/console/sign-in"))
        .form(&[("csrf", "x"), ("key", app.key(Admin))])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

/// POST `/console/customers/{customer}/erase` from the page, with the page's CSRF token and
/// `confirm` = `customer`; the answer's status.
async fn post_erase(browser: &Browser, customer: &str) -> Value {
    browser
        .js(&format!(
            "const x = new XMLHttpRequest();
             x.open('POST', '/console/customers/{customer}/erase', false);
             x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');
             const csrf = document.querySelector('input[name=csrf]').value;
             x.send('csrf=' + encodeURIComponent(csrf) + '&confirm={customer}');
             return x.status;"
        ))
        .await
}

#[tokio::test]
async fn only_an_admin_erases_a_customer_from_the_console_after_typing_its_id() {
    let app = spawn_encrypting_app().await;
    let (customer, _) = customer_with_personal_data(&app).await;
    let erasures = || async {
        app.event_types("customer", &customer)
            .await
            .iter()
            .filter(|t| *t == "customer.erased")
            .count()
    };

    // Support sees the customer, no erase form, and is refused the erasure posted anyway.
    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Support).await;
    browser
        .goto(&format!("/console/customers/{customer}"))
        .await;
    assert_eq!(browser.text("dd.name").await, NAME);
    assert_eq!(
        browser
            .js("return document.querySelectorAll('form.erase').length")
            .await,
        json!(0)
    );
    assert_eq!(post_erase(&browser, &customer).await, json!(403));
    browser.close().await;
    assert_eq!(erasures().await, 0);

    // An admin who types something else than the id erases nothing.
    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Admin).await;
    browser
        .goto(&format!("/console/customers/{customer}"))
        .await;
    browser
        .find("#confirm")
        .await
        .send_keys("yes")
        .await
        .unwrap();
    browser.click("form.erase button").await;
    browser.wait_for_text("h1", "Bad input").await;
    assert_eq!(erasures().await, 0);

    // Typing the id erases: the page shows "[erased]" and offers neither form again.
    browser
        .goto(&format!("/console/customers/{customer}"))
        .await;
    browser
        .find("#confirm")
        .await
        .send_keys(&customer)
        .await
        .unwrap();
    browser.click("form.erase button").await;
    browser.wait_for_text("section.erased h2", "erased").await;
    assert_eq!(browser.text("dd.name").await, "[erased]");
    assert_eq!(browser.text("p.note").await, "[erased]");
    let page = browser.text("main").await;
    assert!(leaked(&page).is_empty(), "{:?} in {page}", leaked(&page));
    assert_eq!(
        browser
            .js("return document.querySelectorAll('form.erase, form.note').length")
            .await,
        json!(0)
    );
    assert_eq!(erasures().await, 1);
    // The same erasure as over the API: the key is destroyed.
    let destroyed: bool = sqlx::query_scalar(
        "SELECT wrapped_key IS NULL AND erased_at IS NOT NULL FROM privacy.customer_keys
          WHERE customer_id = $1",
    )
    .bind(customer.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(destroyed);
    browser.close().await;
}
