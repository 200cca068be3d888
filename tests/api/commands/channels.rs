//! Sales channels (docs/API.md, "Sales channels"): channels and keys, resources created in
//! the key's channel, and the matrix — every route of the OpenAPI document, with keys of
//! every role scoped to each of two channels and global, against resources of both.

use std::collections::BTreeMap;

use ordo::ProcessRole;
use ordo_api::Role::{self, Admin, Analyst, Storefront, Support};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{order_body, read, spawn_app, spawn_app_with, Resp, TestApp};
use crate::nats::{setup, work_until};

const EU: &str = "eu-web";
const US: &str = "us-web";

/// Where a key acts: one channel, or every channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Eu,
    Us,
    Global,
}

impl Scope {
    fn channel(self) -> Option<&'static str> {
        match self {
            Self::Eu => Some(EU),
            Self::Us => Some(US),
            Self::Global => None,
        }
    }
}

/// A key of every role in every scope, and channels `eu-web` and `us-web`.
struct Channels {
    app: TestApp,
    keys: BTreeMap<(Scope, &'static str), String>,
}

async fn request(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Resp {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.unwrap()).await
}

impl Channels {
    async fn new(app: TestApp) -> Self {
        for (id, name) in [(EU, "EU web shop"), (US, "US web shop")] {
            app.post(Admin, "/v1/channels", json!({"id": id, "name": name}))
                .await
                .assert_status(201);
        }
        let mut keys = BTreeMap::new();
        for scope in [Scope::Eu, Scope::Us, Scope::Global] {
            for role in Role::ALL {
                if role == Storefront && scope == Scope::Global {
                    continue; // a storefront key always belongs to a channel
                }
                let key = ordo_api::auth::create_key_in(
                    &app.pool,
                    role,
                    &format!("{role}-{scope:?}"),
                    scope.channel(),
                )
                .await
                .unwrap();
                keys.insert((scope, role.as_str()), key);
            }
        }
        Self { app, keys }
    }

    fn key(&self, scope: Scope, role: Role) -> &str {
        &self.keys[&(scope, role.as_str())]
    }

    async fn call(
        &self,
        scope: Scope,
        role: Role,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let resp = request(&self.app, self.key(scope, role), method, path, body).await;
        if let Some(position) = resp.body.get("position").and_then(Value::as_i64) {
            self.app.note_position(position);
        }
        resp
    }

    /// A customer, a confirmed order and a pending payment, in `scope`'s channel.
    async fn world(&self, scope: Scope) -> World {
        let email = format!("c{}@example.com", Uuid::new_v4().simple());
        let customer = self
            .call(
                scope,
                Storefront,
                Method::POST,
                "/v1/customers",
                Some(json!({"email": email, "name": "Ada"})),
            )
            .await
            .assert_status(201)
            .id();
        let order = self
            .call(
                scope,
                Storefront,
                Method::POST,
                "/v1/orders",
                Some(order_body(&customer)),
            )
            .await
            .assert_status(201)
            .id();
        let payment = self
            .call(
                scope,
                Storefront,
                Method::POST,
                "/v1/payments",
                Some(
                    json!({"order_id": order, "amount": 2999, "currency": "EUR", "method": "card"}),
                ),
            )
            .await
            .assert_status(201)
            .id();
        World {
            customer,
            order,
            payment,
            email,
        }
    }
}

struct World {
    customer: String,
    order: String,
    payment: String,
    email: String,
}

impl World {
    fn id(&self, kind: Kind) -> &str {
        match kind {
            Kind::Order => &self.order,
            Kind::Payment => &self.payment,
            Kind::Customer => &self.customer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Order,
    Payment,
    Customer,
}

/// How a route treats channels.
#[derive(Debug, Clone)]
enum Rule {
    /// Acts on one order, payment or customer by id (`body` for a command): the key's own
    /// channel or a global key reaches it; another channel's scoped key gets 404.
    Resource(Kind, Option<Value>),
    /// Creates a resource in the key's channel; naming another channel is 403.
    Create(Kind),
    /// A list, filtered to the key's channel (`?channel=` for a global key; another channel
    /// named by a scoped key is 403).
    List(Kind),
    /// Figures or records filtered by channel like a list, without resource ids.
    Filtered,
    /// Spans channels: a scoped key is refused (403 `channel-forbidden`).
    GlobalOnly,
    /// Channels themselves: tested by `channels_are_managed_by_global_admins`.
    ChannelAdmin,
    /// Knows no channel (operations, projection status).
    Unscoped,
}

/// The channel rule of every route: (method, path template) → rule. A route the OpenAPI
/// document has and this table lacks fails the matrix test, so no route ships without one.
fn rules() -> BTreeMap<(&'static str, &'static str), Rule> {
    use Kind::*;
    let mut rules = BTreeMap::new();
    let mut add = |method, path, rule| {
        rules.insert((method, path), rule);
    };
    add("post", "/v1/orders", Rule::Create(Order));
    add("post", "/v1/payments", Rule::Create(Payment));
    add("post", "/v1/customers", Rule::Create(Customer));
    add("get", "/v1/orders", Rule::List(Order));
    add("get", "/v1/payments", Rule::List(Payment));
    add("get", "/v1/customers", Rule::List(Customer));
    for (path, kind) in [
        ("/v1/orders/{id}", Order),
        ("/v1/payments/{id}", Payment),
        ("/v1/customers/{id}", Customer),
        ("/v1/orders/{id}/history", Order),
        ("/v1/payments/{id}/history", Payment),
        ("/v1/customers/{id}/history", Customer),
        ("/v1/orders/{id}/state", Order),
        ("/v1/payments/{id}/state", Payment),
        ("/v1/customers/{id}/state", Customer),
    ] {
        add("get", path, Rule::Resource(kind, None));
    }
    let command = |kind, body: Value| Rule::Resource(kind, Some(body));
    add("post", "/v1/orders/{id}/confirm", command(Order, json!({})));
    add(
        "post",
        "/v1/orders/{id}/ship",
        command(Order, json!({"carrier": "DHL", "tracking_number": "T1"})),
    );
    add("post", "/v1/orders/{id}/deliver", command(Order, json!({})));
    add(
        "post",
        "/v1/orders/{id}/cancel",
        command(Order, json!({"reason": "r"})),
    );
    add(
        "post",
        "/v1/payments/{id}/authorize",
        command(Payment, json!({"provider_reference": "p"})),
    );
    add(
        "post",
        "/v1/payments/{id}/capture",
        command(Payment, json!({"amount": 1})),
    );
    add(
        "post",
        "/v1/payments/{id}/void",
        command(Payment, json!({})),
    );
    add(
        "post",
        "/v1/payments/{id}/refund",
        command(Payment, json!({"amount": 1, "reason": "r"})),
    );
    add(
        "post",
        "/v1/payments/{id}/fail",
        command(Payment, json!({"reason": "r"})),
    );
    add(
        "post",
        "/v1/customers/{id}/notes",
        command(Customer, json!({"text": "called"})),
    );
    add(
        "post",
        "/v1/customers/{id}/erase",
        command(Customer, json!({})),
    );
    add("get", "/v1/analytics/sales", Rule::Filtered);
    add("get", "/v1/analytics/funnel", Rule::Filtered);
    add("get", "/v1/notifications", Rule::Filtered);
    for (method, path) in [
        ("get", "/v1/keys"),
        ("post", "/v1/keys"),
        ("post", "/v1/keys/{id}/revoke"),
        ("get", "/v1/workers"),
        ("post", "/v1/workers/{name}/replay"),
        ("get", "/v1/dead-letters"),
        ("post", "/v1/dead-letters/redrive"),
        ("post", "/v1/dead-letters/{id}/redrive"),
        ("post", "/v1/projections/{name}/rebuild"),
        ("get", "/v1/audit/checkpoints"),
        ("post", "/v1/audit/checkpoints"),
        ("post", "/v1/audit/verifications"),
        ("get", "/v1/audit/verifications/{id}"),
        ("get", "/v1/webhooks"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks/{id}"),
        ("patch", "/v1/webhooks/{id}"),
        ("delete", "/v1/webhooks/{id}"),
        ("post", "/v1/webhooks/{id}/disable"),
        ("post", "/v1/webhooks/{id}/enable"),
        ("post", "/v1/webhooks/{id}/rotate-secret"),
        ("post", "/v1/webhooks/{id}/test"),
        ("get", "/v1/webhooks/{id}/deliveries"),
        ("get", "/v1/webhooks/{id}/deliveries/{delivery_id}"),
        ("post", "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
    ] {
        add(method, path, Rule::GlobalOnly);
    }
    add("get", "/v1/channels", Rule::ChannelAdmin);
    add("post", "/v1/channels", Rule::ChannelAdmin);
    add("get", "/v1/channels/{id}", Rule::ChannelAdmin);
    add("patch", "/v1/channels/{id}", Rule::ChannelAdmin);
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v1/projections",
    ] {
        add("get", path, Rule::Unscoped);
    }
    rules
}

/// Every (method, path) of the OpenAPI document: the routes the server serves.
fn documented_routes() -> Vec<(String, String)> {
    let spec = serde_json::to_value(ordo_api::openapi::spec()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_route_has_a_channel_rule() {
    let rules = rules();
    let routes = documented_routes();
    let missing: Vec<_> = routes
        .iter()
        .filter(|(m, p)| !rules.contains_key(&(m.as_str(), p.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a channel rule: {missing:?}"
    );
    let stale: Vec<_> = rules
        .keys()
        .filter(|(m, p)| !routes.iter().any(|(rm, rp)| rm == m && rp == p))
        .collect();
    assert!(
        stale.is_empty(),
        "rules for routes that do not exist: {stale:?}"
    );
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).unwrap()
}

/// Whether `resp` is a refusal of the key's role (the role matrix, tests/api/commands/auth.rs).
fn role_refused(resp: &Resp) -> bool {
    resp.status == 403 && resp.problem() == "forbidden"
}

#[tokio::test]
async fn every_route_answers_each_key_by_its_channel() {
    // With a signing key: `POST /v1/audit/checkpoints` answers 503 on a server without one.
    let app = spawn_app_with(|c| {
        c.audit_signing_key = Some(crate::audit::verifications::KEY.to_owned().into());
    })
    .await;
    let ch = Channels::new(app).await;
    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;
    let scopes = [Scope::Eu, Scope::Us, Scope::Global];
    seed_filtered_rows(&ch.app).await;
    wait_until_ready(&ch.app).await;
    let mut exercised = 0;
    for ((method_name, path), rule) in rules() {
        let m = method(method_name);
        let mut admitted = false;
        for scope in scopes {
            for role in Role::ALL {
                if !ch.keys.contains_key(&(scope, role.as_str())) {
                    continue;
                }
                let who = format!("{method_name} {path} as {role} {scope:?}");
                match &rule {
                    Rule::Resource(kind, body) => {
                        for (owner, world) in [(Scope::Eu, &eu), (Scope::Us, &us)] {
                            let url = path.replace("{id}", world.id(*kind));
                            let url = if url.ends_with("/state") {
                                format!("{url}?version=1")
                            } else if m == Method::GET && !url.ends_with("/history") {
                                // A read model: after it caught up with this test's commands.
                                format!("{url}?min_position={}", ch.app.last_position())
                            } else {
                                url
                            };
                            let resp = ch.call(scope, role, m.clone(), &url, body.clone()).await;
                            if role_refused(&resp) {
                                continue;
                            }
                            admitted = true;
                            if scope == Scope::Global || scope == owner {
                                // Reached: done, or refused by the domain (a transition
                                // the resource's state does not allow), never an error.
                                assert!(
                                    resp.status.is_success()
                                        || [409, 412, 422].contains(&resp.status.as_u16()),
                                    "{who} on {owner:?}'s: {} {:?}",
                                    resp.status,
                                    resp.body
                                );
                            } else {
                                assert_eq!(
                                    resp.status, 404,
                                    "{who} on {owner:?}'s: {:?}",
                                    resp.body
                                );
                                assert_eq!(resp.problem(), "not-found", "{who}");
                            }
                        }
                    }
                    Rule::Create(kind) => {
                        let body = create_body(&ch, *kind, scope).await;
                        let resp = ch
                            .call(scope, role, m.clone(), path, Some(body.clone()))
                            .await;
                        if role_refused(&resp) {
                            continue;
                        }
                        admitted = true;
                        resp.assert_status(201);
                        let channel = scope.channel().unwrap_or(EU);
                        assert_eq!(
                            stream_channel(&ch.app, *kind, &resp.id()).await,
                            channel,
                            "{who}"
                        );
                        if let Some(own) = scope.channel() {
                            // Naming its own channel is the same as naming none.
                            let mut named = create_body(&ch, *kind, scope).await;
                            named["channel"] = json!(own);
                            let resp = ch.call(scope, role, m.clone(), path, Some(named)).await;
                            resp.assert_status(201);
                            assert_eq!(
                                stream_channel(&ch.app, *kind, &resp.id()).await,
                                own,
                                "{who}"
                            );
                            let other = if own == EU { US } else { EU };
                            let mut named = body.clone();
                            named["channel"] = json!(other);
                            ch.call(scope, role, m.clone(), path, Some(named))
                                .await
                                .assert_problem(403, "channel-forbidden");
                        }
                    }
                    Rule::List(kind) => {
                        let query = match kind {
                            Kind::Customer => format!("?email={}", eu.email),
                            _ => String::new(),
                        };
                        let url = format!("{path}{query}");
                        let resp = ch.get_fresh(scope, role, &url).await;
                        if role_refused(&resp) {
                            continue;
                        }
                        admitted = true;
                        resp.assert_status(200);
                        let channels: Vec<&str> = resp.body["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|i| i["channel"].as_str().unwrap())
                            .collect();
                        match scope.channel() {
                            Some(own) => {
                                assert!(channels.iter().all(|c| *c == own), "{who}: {channels:?}");
                                if own == EU {
                                    assert!(!channels.is_empty(), "{who}: its own are listed");
                                }
                                let other = if own == EU { US } else { EU };
                                let sep = if query.is_empty() { '?' } else { '&' };
                                ch.call(
                                    scope,
                                    role,
                                    Method::GET,
                                    &format!("{url}{sep}channel={other}"),
                                    None,
                                )
                                .await
                                .assert_problem(403, "channel-forbidden");
                            }
                            None => {
                                assert!(channels.contains(&EU), "{who}: {channels:?}");
                                if *kind != Kind::Customer {
                                    assert!(channels.contains(&US), "{who}: {channels:?}");
                                }
                                let sep = if query.is_empty() { '?' } else { '&' };
                                let only = ch
                                    .call(
                                        scope,
                                        role,
                                        Method::GET,
                                        &format!("{url}{sep}channel={US}"),
                                        None,
                                    )
                                    .await;
                                only.assert_status(200);
                                assert!(only.body["items"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .all(|i| i["channel"] == US));
                                // A channel that does not exist (a typo) is not an empty list.
                                ch.call(
                                    scope,
                                    role,
                                    Method::GET,
                                    &format!("{url}{sep}channel=eu-typo"),
                                    None,
                                )
                                .await
                                .assert_problem(400, "bad-query");
                            }
                        }
                    }
                    Rule::Filtered => {
                        let resp = ch.call(scope, role, m.clone(), path, None).await;
                        if role_refused(&resp) {
                            continue;
                        }
                        admitted = true;
                        resp.assert_status(200);
                        assert_filtered(path, &resp, scope.channel(), &who);
                        for other in [EU, US] {
                            let named = ch
                                .call(
                                    scope,
                                    role,
                                    m.clone(),
                                    &format!("{path}?channel={other}"),
                                    None,
                                )
                                .await;
                            if scope.channel().is_none_or(|own| own == other) {
                                named.assert_status(200);
                                assert_filtered(path, &named, Some(other), &who);
                            } else {
                                named.assert_problem(403, "channel-forbidden");
                            }
                        }
                        if scope.channel().is_none() {
                            ch.call(
                                scope,
                                role,
                                m.clone(),
                                &format!("{path}?channel=eu-typo"),
                                None,
                            )
                            .await
                            .assert_problem(400, "bad-query");
                        }
                    }
                    Rule::GlobalOnly => {
                        let url = path
                            .replace("{id}", &Uuid::nil().to_string())
                            .replace("{delivery_id}", &Uuid::nil().to_string())
                            .replace("{name}", "orders");
                        let resp = ch.call(scope, role, m.clone(), &url, Some(json!({}))).await;
                        if role_refused(&resp) {
                            continue;
                        }
                        admitted = true;
                        if scope == Scope::Global {
                            assert!(
                                resp.status != 403 && !resp.status.is_server_error(),
                                "{who}: {} {:?}",
                                resp.status,
                                resp.body
                            );
                        } else {
                            resp.assert_problem(403, "channel-forbidden");
                        }
                    }
                    Rule::Unscoped => {
                        admitted = true;
                        if scope != Scope::Global {
                            // What knows no channel answers a scoped key as any other.
                            let resp = ch.call(scope, role, m.clone(), path, None).await;
                            if !role_refused(&resp) {
                                assert_eq!(resp.status, 200, "{who}: {:?}", resp.body);
                            }
                        }
                    }
                    Rule::ChannelAdmin => admitted = true,
                }
            }
        }
        assert!(admitted, "{method_name} {path}: no key reached it");
        exercised += 1;
    }
    assert_eq!(exercised, documented_routes().len());
}

/// Orders counted by analytics (day buckets of today) in each channel, for the matrix's
/// `Filtered` routes: no worker runs there, so their rows are written here.
const SALES: [(&str, i64); 2] = [(EU, 2), (US, 5)];

async fn seed_filtered_rows(app: &TestApp) {
    for (channel, orders) in SALES {
        sqlx::query(
            "INSERT INTO analytics.sales (granularity, bucket, currency, channel, orders, gross)
             VALUES ('day', date_trunc('day', now()), 'EUR', $1, $2, 0)",
        )
        .bind(channel)
        .bind(orders)
        .execute(&app.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO notification.notifications (id, event_id, kind, channel, status)
             VALUES ($1, $2, 'order_placed', $3, 'recorded')",
        )
        .bind(Uuid::now_v7())
        .bind(Uuid::now_v7())
        .bind(channel)
        .execute(&app.pool)
        .await
        .unwrap();
    }
}

/// `/readyz` answers 200 once every role of the process runs: wait for that, so that the
/// `Unscoped` routes are asked of a started process.
async fn wait_until_ready(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.get(Support, "/readyz").await.status != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A `Filtered` answer holds only `channel`'s records (`None`: every channel's): each item
/// that names its channel names that one, and the sales figures are that channel's.
#[track_caller]
fn assert_filtered(path: &str, resp: &Resp, channel: Option<&str>, who: &str) {
    let items = resp.body["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for item in items {
        if let (Some(own), Some(named)) = (channel, item.get("channel")) {
            assert_eq!(named, own, "{who}: {item}");
        }
    }
    let expected = |f: &dyn Fn(&str) -> bool| -> Vec<&str> {
        SALES.iter().map(|(c, _)| *c).filter(|c| f(c)).collect()
    };
    let seeded = expected(&|c| channel.is_none_or(|own| own == c));
    match path {
        "/v1/notifications" => {
            let mut listed: Vec<&str> = items
                .iter()
                .map(|i| i["channel"].as_str().unwrap())
                .collect();
            listed.sort();
            assert_eq!(listed, seeded, "{who}");
        }
        "/v1/analytics/sales" => {
            let orders: i64 = items.iter().map(|i| i["orders"].as_i64().unwrap()).sum();
            let want: i64 = SALES
                .iter()
                .filter(|(c, _)| seeded.contains(c))
                .map(|(_, n)| n)
                .sum();
            assert_eq!(orders, want, "{who}: {items:?}");
        }
        _ => {}
    }
}

impl Channels {
    /// GET after the read models caught up with every command this test sent.
    async fn get_fresh(&self, scope: Scope, role: Role, path: &str) -> Resp {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}min_position={}", self.app.last_position());
        self.call(scope, role, Method::GET, &url, None).await
    }
}

/// A valid creation body for `kind` in `scope`'s channel (a global key creates in `eu-web`,
/// naming it); a payment is for a fresh order (the fixtures' may be cancelled by now).
async fn create_body(ch: &Channels, kind: Kind, scope: Scope) -> Value {
    let owner = if scope == Scope::Us {
        Scope::Us
    } else {
        Scope::Eu
    };
    let mut body = match kind {
        Kind::Customer => {
            json!({"email": format!("n{}@example.com", Uuid::new_v4().simple()), "name": "New"})
        }
        Kind::Order => order_body(&ch.world(owner).await.customer),
        Kind::Payment => {
            let order = ch.world(owner).await.order;
            json!({"order_id": order, "amount": 1, "currency": "EUR", "method": "card"})
        }
    };
    if scope == Scope::Global {
        body["channel"] = json!(EU);
    }
    body
}

async fn stream_channel(app: &TestApp, kind: Kind, id: &str) -> String {
    let aggregate = match kind {
        Kind::Order => "order",
        Kind::Payment => "payment",
        Kind::Customer => "customer",
    };
    sqlx::query_scalar(
        "SELECT metadata ->> 'channel' FROM event_store.events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(aggregate)
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn channels_are_managed_by_global_admins() {
    let ch = Channels::new(spawn_app().await).await;
    let app = &ch.app;

    let list = app.get(Admin, "/v1/channels").await;
    list.assert_status(200);
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", EU, US]);

    let created = app
        .post(
            Admin,
            "/v1/channels",
            json!({"id": "pos-1", "name": "Till"}),
        )
        .await;
    created.assert_status(201);
    assert_eq!(created.header("location"), Some("/v1/channels/pos-1"));
    app.post(
        Admin,
        "/v1/channels",
        json!({"id": "pos-1", "name": "Again"}),
    )
    .await
    .assert_problem(409, "already-exists");
    for bad in ["", "POS", "-pos", "pos_1", &"p".repeat(64)] {
        let resp = app
            .post(Admin, "/v1/channels", json!({"id": bad, "name": "x"}))
            .await;
        resp.assert_problem(422, "validation");
        assert_eq!(resp.body["errors"][0]["field"], "id", "{bad:?}");
    }
    app.post(Admin, "/v1/channels", json!({"id": "ok"}))
        .await
        .assert_problem(422, "validation");

    let renamed = app
        .patch(Admin, "/v1/channels/pos-1", json!({"name": "Till 1"}))
        .await;
    renamed.assert_status(200);
    assert_eq!(renamed.body["name"], "Till 1");
    assert_eq!(
        app.get(Admin, "/v1/channels/pos-1").await.body["name"],
        "Till 1"
    );
    app.patch(Admin, "/v1/channels/nope", json!({"name": "x"}))
        .await
        .assert_problem(404, "not-found");

    // A scoped admin sees its own channel only, and changes none.
    let own = ch
        .call(Scope::Eu, Admin, Method::GET, "/v1/channels", None)
        .await;
    assert_eq!(own.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(own.body["items"][0]["id"], EU);
    ch.call(
        Scope::Eu,
        Admin,
        Method::GET,
        &format!("/v1/channels/{US}"),
        None,
    )
    .await
    .assert_problem(404, "not-found");
    ch.call(
        Scope::Eu,
        Admin,
        Method::POST,
        "/v1/channels",
        Some(json!({"id": "x", "name": "x"})),
    )
    .await
    .assert_problem(403, "channel-forbidden");
    ch.call(
        Scope::Eu,
        Admin,
        Method::PATCH,
        &format!("/v1/channels/{EU}"),
        Some(json!({"name": "x"})),
    )
    .await
    .assert_problem(403, "channel-forbidden");
    app.get(Support, "/v1/channels")
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn keys_belong_to_a_channel_or_to_all() {
    let app = spawn_app().await;
    app.post(Admin, "/v1/channels", json!({"id": EU, "name": "EU"}))
        .await
        .assert_status(201);

    let storefront = app
        .post(
            Admin,
            "/v1/keys",
            json!({"role": "storefront", "name": "shop"}),
        )
        .await;
    storefront.assert_status(201);
    assert_eq!(storefront.body["channel"], "default");
    let scoped = app
        .post(
            Admin,
            "/v1/keys",
            json!({"role": "storefront", "name": "eu", "channel": EU}),
        )
        .await;
    assert_eq!(scoped.body["channel"], EU);
    let global = app
        .post(
            Admin,
            "/v1/keys",
            json!({"role": "support", "name": "desk"}),
        )
        .await;
    assert_eq!(global.body["channel"], Value::Null);
    let scoped_support = app
        .post(
            Admin,
            "/v1/keys",
            json!({"role": "support", "name": "eu desk", "channel": EU}),
        )
        .await;
    assert_eq!(scoped_support.body["channel"], EU);

    let unknown = app
        .post(
            Admin,
            "/v1/keys",
            json!({"role": "storefront", "name": "x", "channel": "nope"}),
        )
        .await;
    unknown.assert_problem(422, "validation");
    assert_eq!(unknown.body["errors"][0]["field"], "channel");
    app.post(
        Admin,
        "/v1/keys",
        json!({"role": "storefront", "name": "x", "channel": "Bad Id"}),
    )
    .await
    .assert_problem(422, "validation");

    let listed = app.get(Admin, "/v1/keys").await;
    let channel_of = |name: &str| {
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["channel"].clone())
            .unwrap()
    };
    assert_eq!(channel_of("shop"), "default");
    assert_eq!(channel_of("eu"), EU);
    assert_eq!(channel_of("desk"), Value::Null);

    // The key works in its channel: a customer it registers is EU's.
    let key = scoped.body["key"].as_str().unwrap();
    let customer = request(
        &app,
        key,
        Method::POST,
        "/v1/customers",
        Some(json!({"email": "eu@example.com", "name": "Eu"})),
    )
    .await;
    customer.assert_status(201);
    assert_eq!(
        stream_channel(&app, Kind::Customer, &customer.id()).await,
        EU
    );
}

#[tokio::test]
async fn an_order_or_payment_across_channels_is_refused() {
    let ch = Channels::new(spawn_app().await).await;
    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;

    // A US storefront ordering for an EU customer.
    ch.call(
        Scope::Us,
        Storefront,
        Method::POST,
        "/v1/orders",
        Some(order_body(&eu.customer)),
    )
    .await
    .assert_problem(409, "channel-mismatch");
    // A global admin placing a US order for the EU customer.
    let mut body = order_body(&eu.customer);
    body["channel"] = json!(US);
    ch.call(Scope::Global, Admin, Method::POST, "/v1/orders", Some(body))
        .await
        .assert_problem(409, "channel-mismatch");
    // A payment of the US channel for an EU order.
    ch.call(
        Scope::Us,
        Storefront,
        Method::POST,
        "/v1/payments",
        Some(json!({"order_id": eu.order, "amount": 1, "currency": "EUR", "method": "card"})),
    )
    .await
    .assert_problem(409, "channel-mismatch");
    // A global key without `channel` acts in `default`: the EU order is not its.
    ch.call(
        Scope::Global,
        Admin,
        Method::POST,
        "/v1/payments",
        Some(json!({"order_id": us.order, "amount": 1, "currency": "EUR", "method": "card"})),
    )
    .await
    .assert_problem(409, "channel-mismatch");
    // Naming a channel that does not exist.
    let mut body = order_body(&eu.customer);
    body["channel"] = json!("nope");
    ch.call(Scope::Global, Admin, Method::POST, "/v1/orders", Some(body))
        .await
        .assert_problem(422, "validation");

    // Events carry the channel; a history item shows it.
    let history = ch
        .call(
            Scope::Global,
            Support,
            Method::GET,
            &format!("/v1/orders/{}/history", eu.order),
            None,
        )
        .await;
    assert_eq!(history.body["items"][0]["metadata"]["channel"], EU);
}

#[tokio::test]
async fn analytics_per_channel_add_up_to_the_global_figures() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let ch = Channels::new(app).await;
    let mut expected_orders = BTreeMap::new();
    for (scope, orders) in [(Scope::Eu, 2), (Scope::Us, 1)] {
        for _ in 0..orders {
            ch.world(scope).await;
        }
        expected_orders.insert(scope.channel().unwrap(), orders);
    }
    let app = &ch.app;
    let events = app.event_count().await;
    let s = setup(app).await;
    s.publish_all(app).await;
    let runner = ordo_workers::WorkerRunner::connect(
        app.pool.clone(),
        ordo_workers::Worker::Analytics,
        s.worker_config.clone(),
    )
    .await
    .unwrap();
    work_until(
        &runner,
        app,
        "SELECT count(*) FROM analytics.processed",
        events,
    )
    .await;

    let orders = |resp: &Resp| -> i64 {
        resp.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["orders"].as_i64().unwrap())
            .sum()
    };
    let gross = |resp: &Resp| -> i64 {
        resp.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["gross"].as_i64().unwrap())
            .sum()
    };
    let all = ch
        .call(
            Scope::Global,
            Analyst,
            Method::GET,
            "/v1/analytics/sales",
            None,
        )
        .await;
    all.assert_status(200);
    let mut sum_orders = 0;
    let mut sum_gross = 0;
    for channel in [EU, US] {
        let one = ch
            .call(
                Scope::Global,
                Analyst,
                Method::GET,
                &format!("/v1/analytics/sales?channel={channel}"),
                None,
            )
            .await;
        assert_eq!(orders(&one), expected_orders[channel], "{channel}");
        sum_orders += orders(&one);
        sum_gross += gross(&one);
    }
    assert_eq!(orders(&all), 3);
    assert_eq!((sum_orders, sum_gross), (orders(&all), gross(&all)));
    // A scoped analyst sees its own channel's figures, whatever it asks.
    let scoped = ch
        .call(Scope::Us, Analyst, Method::GET, "/v1/analytics/sales", None)
        .await;
    assert_eq!(orders(&scoped), 1);
    let funnel = ch
        .call(
            Scope::Eu,
            Analyst,
            Method::GET,
            "/v1/analytics/funnel",
            None,
        )
        .await;
    assert_eq!(funnel.body["placed"], 2);
    let funnel = ch
        .call(
            Scope::Global,
            Analyst,
            Method::GET,
            "/v1/analytics/funnel",
            None,
        )
        .await;
    assert_eq!(funnel.body["placed"], 3);
    s.cleanup().await;
}

#[tokio::test]
async fn a_webhook_subscribed_to_one_channel_receives_only_its_events() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let ch = Channels::new(app).await;
    let app = &ch.app;
    let eu_hook = crate::workers::webhooks::Receiver::start(|_| 200).await;
    let all_hook = crate::workers::webhooks::Receiver::start(|_| 200).await;
    let created = app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": eu_hook.url, "event_types": ["order.placed"], "channel": EU}),
        )
        .await;
    created.assert_status(201);
    let eu_endpoint = created.id();
    app.post(
        Admin,
        "/v1/webhooks",
        json!({"url": all_hook.url, "event_types": ["order.placed"]}),
    )
    .await
    .assert_status(201);
    app.post(
        Admin,
        "/v1/webhooks",
        json!({"url": all_hook.url, "event_types": ["*"], "channel": "nope"}),
    )
    .await
    .assert_problem(422, "validation");
    ch.call(
        Scope::Eu,
        Admin,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": eu_hook.url, "event_types": ["*"], "channel": EU})),
    )
    .await
    .assert_problem(403, "channel-forbidden");
    let shown = app.get(Admin, &format!("/v1/webhooks/{eu_endpoint}")).await;
    assert_eq!(shown.body["channel"], EU);

    // An endpoint moved to another channel by a global admin receives that channel's events.
    let moved_hook = crate::workers::webhooks::Receiver::start(|_| 200).await;
    let moved = app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": moved_hook.url, "event_types": ["order.placed"], "channel": EU}),
        )
        .await
        .id();
    let path = format!("/v1/webhooks/{moved}");
    let to_all = app.patch(Admin, &path, json!({"channel": null})).await;
    to_all.assert_status(200);
    assert_eq!(to_all.body["channel"], Value::Null);
    let to_us = app.patch(Admin, &path, json!({"channel": US})).await;
    to_us.assert_status(200);
    assert_eq!(to_us.body["channel"], US);
    assert_eq!(to_us.body["event_types"], json!(["order.placed"]));
    for bad in [json!("nope"), json!("Not A Slug"), json!(3)] {
        let refused = app.patch(Admin, &path, json!({"channel": bad})).await;
        refused.assert_problem(422, "validation");
        assert_eq!(refused.body["errors"][0]["field"], "channel");
    }
    ch.call(
        Scope::Us,
        Admin,
        Method::PATCH,
        &path,
        Some(json!({"channel": US})),
    )
    .await
    .assert_problem(403, "channel-forbidden");
    // A change without `channel` leaves it.
    let described = app
        .patch(Admin, &path, json!({"description": "moved"}))
        .await;
    assert_eq!(described.body["channel"], US);

    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;
    let s = setup(app).await;
    s.publish_all(app).await;
    let pool = crate::workers::webhooks::quick_pool(app, None, 3);
    s.deliver_until(
        app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'delivered'",
        4,
    )
    .await;

    let orders = |hook: &crate::workers::webhooks::Receiver| -> Vec<String> {
        let mut ids: Vec<String> = hook
            .received()
            .iter()
            .map(|(_, body)| {
                let body: Value = serde_json::from_str(body).unwrap();
                body["data"]["order_id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(orders(&eu_hook), std::slice::from_ref(&eu.order));
    assert_eq!(orders(&moved_hook), std::slice::from_ref(&us.order));
    let mut both = vec![eu.order, us.order];
    both.sort();
    assert_eq!(orders(&all_hook), both);
    s.cleanup().await;
}

#[tokio::test]
async fn a_channel_with_its_own_sender_mails_from_it() {
    use crate::workers::notifications::{notify_until, SmtpSink};
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let ch = Channels::new(app).await;
    let app = &ch.app;
    let updated = app
        .patch(
            Admin,
            &format!("/v1/channels/{EU}"),
            json!({"email_from_address": "shop@eu.example", "email_from_name": "EU Shop"}),
        )
        .await;
    updated.assert_status(200);
    assert_eq!(updated.body["email_from_address"], "shop@eu.example");
    app.patch(
        Admin,
        &format!("/v1/channels/{US}"),
        json!({"email_from_address": "not an address"}),
    )
    .await
    .assert_problem(422, "validation");

    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;
    let sink = SmtpSink::start().await;
    let events = app.event_count().await;
    let s = setup(app).await;
    s.publish_all(app).await;
    let mailer =
        ordo_workers::mailer::Mailer::new(&sink.url, "Ordo <orders@ordo.invalid>").unwrap();
    let notifier = s.runner(app, Some(mailer)).await;
    notify_until(
        &notifier,
        app,
        "SELECT count(*) FROM notification.processed",
        events,
    )
    .await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "one order placed per channel: {mails:#?}");
    let from_of = |email: &str| {
        mails
            .iter()
            .find(|m| m.to == [format!("<{email}>")])
            .map(|m| (m.from.clone(), m.header("From").unwrap()))
            .unwrap()
    };
    let (envelope, header) = from_of(&eu.email);
    assert_eq!(envelope, "<shop@eu.example>");
    assert!(header.contains("EU Shop"), "{header}");
    assert_eq!(from_of(&us.email).0, "<orders@ordo.invalid>");

    // Notifications are listed by channel like the rest.
    let listed = ch
        .call(Scope::Us, Support, Method::GET, "/v1/notifications", None)
        .await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["channel"], US);
    s.cleanup().await;
}

#[tokio::test]
async fn the_console_shows_channels_and_scopes_a_session_like_its_key() {
    let ch = Channels::new(spawn_app().await).await;
    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;
    crate::console::pages::wait_for_sql(
        &ch.app,
        "SELECT EXISTS (SELECT 1 FROM projections.customers c JOIN projections.orders o ON o.customer_id = c.id WHERE o.id = $1::uuid)",
        &us.order,
    )
    .await;

    let browser = crate::browser::Browser::start(&ch.app).await;
    browser.sign_in_with(ch.key(Scope::Eu, Admin), Admin).await;
    assert!(browser.text("header.top .who").await.contains(EU));
    browser
        .goto(&format!("/console/customers/{}", eu.customer))
        .await;
    assert_eq!(browser.text("dd.channel").await, EU);
    assert!(browser.text("main").await.contains("Channel"));
    browser.goto(&format!("/console/orders/{}", eu.order)).await;
    assert_eq!(browser.text("span.channel").await, EU);
    // Another channel's customer and order are not found, as over the API.
    for path in [
        format!("/console/customers/{}", us.customer),
        format!("/console/orders/{}", us.order),
    ] {
        browser.goto(&path).await;
        assert_eq!(browser.text("h1").await, "Not found", "{path}");
    }
    // What spans channels is not a scoped admin's.
    browser.goto("/console/keys").await;
    assert_eq!(browser.text("h1").await, "Not allowed");
    let links = browser
        .js("return Array.from(document.querySelectorAll('header nav a')).map(a => a.getAttribute('href'))")
        .await;
    assert!(!links.to_string().contains("/console/keys"), "{links}");

    // A global admin creates a storefront key of `eu-web` from the keys page.
    let hook = ch
        .app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "channel": EU}),
        )
        .await;
    hook.assert_status(201);
    browser
        .sign_in_with(ch.key(Scope::Global, Admin), Admin)
        .await;
    browser.goto("/console/keys").await;
    browser
        .find("#key-name")
        .await
        .send_keys("eu till")
        .await
        .unwrap();
    browser
        .find("#key-role")
        .await
        .select_by_value("storefront")
        .await
        .unwrap();
    browser
        .find("#key-channel")
        .await
        .select_by_value(EU)
        .await
        .unwrap();
    browser.click("form[action='/console/keys'] button").await;
    browser.find("#new-key").await;
    let key = browser
        .js("return document.querySelector('#new-key').value")
        .await;
    let key = key.as_str().unwrap();
    let channel_of = |name: &'static str| {
        let browser = &browser;
        async move {
            browser
                .js(&format!(
                    "return Array.from(document.querySelectorAll('tbody tr'))
                       .filter(r => r.cells[0].textContent === '{name}')
                       .map(r => r.querySelector('td.channel').textContent)"
                ))
                .await
        }
    };
    assert_eq!(channel_of("eu till").await, json!([EU]));
    assert_eq!(channel_of("admin-Global").await, json!(["global"]));
    let customer = request(
        &ch.app,
        key,
        Method::POST,
        "/v1/customers",
        Some(json!({"email": "till@eu.example", "name": "Till"})),
    )
    .await;
    customer.assert_status(201);
    assert_eq!(
        stream_channel(&ch.app, Kind::Customer, &customer.id()).await,
        EU
    );
    // The webhooks page shows which channel an endpoint is subscribed to.
    browser.goto("/console/webhooks").await;
    assert_eq!(browser.text("td.channel").await, EU);
    browser.close().await;
}

#[tokio::test]
async fn a_rebuild_fills_every_read_model_s_channel_from_the_log() {
    let ch = Channels::new(spawn_app().await).await;
    let eu = ch.world(Scope::Eu).await;
    let us = ch.world(Scope::Us).await;
    for name in ["orders", "payments", "customers"] {
        ch.app
            .post(Admin, &format!("/v1/projections/{name}/rebuild"), json!({}))
            .await
            .assert_status(202);
    }
    crate::read_models::rebuilds::wait_until_rebuilt(&ch.app).await;
    for (scope, world) in [(Scope::Eu, &eu), (Scope::Us, &us)] {
        let channel = scope.channel().unwrap();
        for (collection, id) in [
            ("orders", &world.order),
            ("payments", &world.payment),
            ("customers", &world.customer),
        ] {
            let read = ch
                .get_fresh(Scope::Global, Admin, &format!("/v1/{collection}/{id}"))
                .await;
            read.assert_status(200);
            assert_eq!(read.body["channel"], channel, "{collection}");
            let other = if scope == Scope::Eu {
                Scope::Us
            } else {
                Scope::Eu
            };
            ch.get_fresh(other, Storefront, &format!("/v1/{collection}/{id}"))
                .await
                .assert_problem(404, "not-found");
        }
    }
}

#[tokio::test]
async fn the_cli_creates_channels_and_keys_scoped_to_them() {
    let app = spawn_app().await;
    let ordo = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env("ORDO_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = ordo(&["channels", "create", "pos-1", "--name", "Till"]);
    assert!(ok, "{err}");
    assert!(out.contains("pos-1"), "{out}");
    let (ok, _, err) = ordo(&["channels", "create", "Bad_Id", "--name", "x"]);
    assert!(!ok && err.contains("lowercase slug"), "{err}");
    let (ok, _, err) = ordo(&["channels", "rename", "pos-1", "--name", "Till 1"]);
    assert!(ok, "{err}");
    let (ok, out, _) = ordo(&["channels", "list"]);
    assert!(
        ok && out.contains("default") && out.contains("Till 1"),
        "{out}"
    );
    let (ok, out, err) = ordo(&["channels", "show", "pos-1"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("pos-1") && out.contains("Till 1") && out.contains("(configured sender)"),
        "{out}"
    );
    let (ok, _, err) = ordo(&["channels", "show", "nope"]);
    assert!(!ok && err.contains("no channel has the id `nope`"), "{err}");

    // The channel's e-mail sender: set, refused when not an address, then cleared.
    let (ok, out, err) = ordo(&[
        "channels",
        "sender",
        "pos-1",
        "--address",
        "till@shop.example",
        "--sender-name",
        "Till Shop",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Till Shop <till@shop.example>"), "{out}");
    let shown = app.get(Admin, "/v1/channels/pos-1").await;
    assert_eq!(shown.body["email_from_address"], "till@shop.example");
    assert_eq!(shown.body["email_from_name"], "Till Shop");
    let (ok, _, err) = ordo(&["channels", "sender", "pos-1", "--address", "not an address"]);
    assert!(!ok && err.contains("is not an e-mail address"), "{err}");
    let (_, out, _) = ordo(&["channels", "show", "pos-1"]);
    assert!(
        out.contains("Till Shop <till@shop.example>"),
        "unchanged: {out}"
    );
    let (ok, out, err) = ordo(&["channels", "sender", "pos-1"]);
    assert!(ok && out.contains("(configured sender)"), "{out} {err}");
    assert_eq!(
        app.get(Admin, "/v1/channels/pos-1").await.body["email_from_address"],
        Value::Null
    );
    let (ok, out, err) = ordo(&[
        "keys",
        "create",
        "--role",
        "storefront",
        "--channel",
        "pos-1",
        "--name",
        "till",
    ]);
    assert!(ok, "{err}");
    let key = out.trim().to_owned();
    let (ok, _, err) = ordo(&[
        "keys",
        "create",
        "--role",
        "storefront",
        "--channel",
        "nope",
        "--name",
        "x",
    ]);
    assert!(!ok && err.contains("no channel"), "{err}");
    let (_, out, _) = ordo(&["keys", "list"]);
    assert!(
        out.lines()
            .any(|l| l.contains("till") && l.contains("pos-1")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("test-support") && l.contains("(global)")),
        "{out}"
    );

    let customer = request(
        &app,
        &key,
        Method::POST,
        "/v1/customers",
        Some(json!({"email": "till@example.com", "name": "Till"})),
    )
    .await;
    customer.assert_status(201);
    assert_eq!(
        stream_channel(&app, Kind::Customer, &customer.id()).await,
        "pos-1"
    );
}

/// A database recorded before channels existed (migrations up to 0110, rows in the shapes
/// the code of that time wrote them), then upgraded: everything in it belongs to `default`.
#[tokio::test]
async fn existing_data_belongs_to_default_after_the_migration() {
    use chrono::{DurationRound, TimeDelta, Utc};
    use ordo_commands::chain;

    let database_url = crate::helpers::fresh_database_url();
    ordo_commands::db::ensure_database(&database_url)
        .await
        .unwrap();
    let old = sqlx::PgPool::connect(&database_url).await.unwrap();
    let before_channels = crate::helpers::migrations_before(110);
    assert!(ordo::MIGRATOR
        .migrations
        .iter()
        .any(|m| m.version == 110 && m.description.contains("channels")));
    before_channels.run(&old).await.unwrap();

    // Keys as auth.api_keys held them: no channel column.
    let storefront_key = format!("ordo_{}", Uuid::new_v4().simple());
    let support_key = format!("ordo_{}", Uuid::new_v4().simple());
    for (key, role, name) in [
        (&storefront_key, "storefront", "old shop"),
        (&support_key, "support", "old desk"),
    ] {
        sqlx::query(
            "INSERT INTO auth.api_keys (id, name, role, key_hash)
             VALUES ($1, $2, $3, sha256(convert_to($4, 'UTF8')))",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(role)
        .bind(key)
        .execute(&old)
        .await
        .unwrap();
    }

    // One customer registered and one order placed, their metadata without `channel`,
    // chained as the appender chained them.
    let customer = Uuid::now_v7();
    let order = Uuid::now_v7();
    let placed_at = chain::to_micros(Utc::now());
    let metadata = json!({
        "actor_key_id": Uuid::now_v7(), "actor_name": "old shop", "actor_role": "storefront",
        "causation_id": Uuid::now_v7(), "correlation_id": Uuid::now_v7(),
        "request_id": Uuid::now_v7(),
    });
    let events = [
        (
            "customer",
            customer,
            "customer.registered",
            json!({"type": "customer.registered", "customer_id": customer,
                   "email": "old@example.com", "name": "Old Customer", "phone": null,
                   "registered_at": placed_at}),
        ),
        (
            "order",
            order,
            "order.placed",
            json!({"type": "order.placed", "order_id": order, "customer_id": customer,
                   "currency": "EUR", "total": 2999, "placed_at": placed_at,
                   "lines": [
                       {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": 1250, "line_total": 2500},
                       {"sku": "PEN-2", "name": "Pen", "quantity": 1, "unit_price": 499, "line_total": 499}],
                   "shipping_address": {"line1": "1 Main St", "city": "Berlin",
                                        "postal_code": "10115", "country": "DE"}}),
        ),
    ];
    let mut head = chain::ZERO;
    let mut event_ids = Vec::new();
    for (aggregate, id, event_type, payload) in &events {
        let (id, data, meta) = (
            id.to_string(),
            chain::canonical(payload),
            chain::canonical(&metadata),
        );
        let event_id = Uuid::new_v4();
        head = chain::link(
            &head,
            &chain::Linked {
                aggregate_type: aggregate,
                aggregate_id: &id,
                sequence: 1,
                event_type,
                schema_version: "2",
                data: &data,
                metadata: &meta,
                event_id,
                recorded_at: placed_at,
            },
        );
        sqlx::query(
            "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type,
                    event_version, payload, metadata, event_id, recorded_at, hash)
             VALUES ($1, $2, 1, $3, '2', $4::jsonb, $5::jsonb, $6, $7, $8)",
        )
        .bind(aggregate)
        .bind(&id)
        .bind(event_type)
        .bind(&data)
        .bind(&meta)
        .bind(event_id)
        .bind(placed_at)
        .bind(head.to_vec())
        .execute(&old)
        .await
        .unwrap();
        event_ids.push(event_id);
    }

    // The read models as the projector of that time built them: its tables without the
    // channel column, caught up with both events.
    for projection in ordo_projections::Projection::ALL {
        let ddl: String = projection
            .ddl("projections")
            .lines()
            .filter(|line| !line.contains("channel"))
            .collect::<Vec<_>>()
            .join("\n");
        sqlx::raw_sql(&ddl).execute(&old).await.unwrap();
        sqlx::query(
            "INSERT INTO projections.checkpoints (name, global_position, version) VALUES ($1, 2, $2)",
        )
        .bind(projection.name())
        .bind(projection.version())
        .execute(&old)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO projections.customers (id, email, name, order_count, cancelled_count,
                open_orders, notes_count, first_order_at, last_order_at, registered_at)
         VALUES ($1, 'old@example.com', 'Old Customer', 1, 0, 1, 0, $2, $2, $2)",
    )
    .bind(customer)
    .bind(placed_at)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO projections.customer_spend (customer_id, currency, gross, refunded, orders)
         VALUES ($1, 'EUR', 2999, 0, 1)",
    )
    .bind(customer)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO projections.orders (id, customer_id, status, payment_status,
                fulfillment_status, currency, total, line_count, lines, placed_at, updated_at, version)
         VALUES ($1, $2, 'placed', 'unpaid', 'unfulfilled', 'EUR', 2999, 2, $3, $4, $4, 1)",
    )
    .bind(order)
    .bind(customer)
    .bind(json!([
        {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": 1250, "line_total": 2500, "shipped": 0},
        {"sku": "PEN-2", "name": "Pen", "quantity": 1, "unit_price": 499, "line_total": 499, "shipped": 0}
    ]))
    .bind(placed_at)
    .execute(&old)
    .await
    .unwrap();

    // The workers' rows: the order counted by analytics, its confirmation mail recorded.
    for granularity in ["hour", "day"] {
        let bucket = placed_at
            .duration_trunc(if granularity == "hour" {
                TimeDelta::hours(1)
            } else {
                TimeDelta::days(1)
            })
            .unwrap();
        sqlx::query(
            "INSERT INTO analytics.sales (granularity, bucket, currency, orders, gross)
             VALUES ($1, $2, 'EUR', 1, 2999)",
        )
        .bind(granularity)
        .bind(bucket)
        .execute(&old)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO analytics.order_stages (order_id, stage) VALUES ($1, 'placed')")
        .bind(order)
        .execute(&old)
        .await
        .unwrap();
    sqlx::query("INSERT INTO analytics.processed (event_id) SELECT unnest($1::uuid[])")
        .bind(&event_ids)
        .execute(&old)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO notification.notifications (id, event_id, kind, order_id, customer_id,
                recipient, subject, body, status)
         VALUES ($1, $2, 'order_placed', $3, $4, 'old@example.com', 'Your order', 'Thanks', 'recorded')",
    )
    .bind(Uuid::now_v7())
    .bind(event_ids[1])
    .bind(order)
    .bind(customer)
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    // Upgrade: the application applies the rest of the migrations as it starts.
    let mut config = ordo::Config::defaults();
    config.database_url = database_url.clone().into();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.db_max_connections = 12;
    config.roles = vec![ProcessRole::Api, ProcessRole::Projector];
    let built = ordo::Application::build(&config).await.unwrap();
    let pool = built.pool().clone();
    let app = crate::helpers::start(built, pool, database_url).await;

    let keys: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT name, channel FROM auth.api_keys WHERE name LIKE 'old %' ORDER BY name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            ("old desk".to_owned(), None),
            ("old shop".to_owned(), Some("default".to_owned()))
        ]
    );

    // The old order and customer are `default`'s, to the old keys as to a new global one.
    let (order, customer) = (order.to_string(), customer.to_string());
    for key in [&storefront_key, &support_key] {
        for path in [
            format!("/v1/orders/{order}"),
            format!("/v1/customers/{customer}"),
        ] {
            let read = request(&app, key, Method::GET, &path, None).await;
            read.assert_status(200);
            assert_eq!(read.body["channel"], "default", "{path}");
        }
        let listed = request(&app, key, Method::GET, "/v1/orders?channel=default", None).await;
        listed.assert_status(200);
        assert_eq!(listed.body["items"][0]["id"], order.as_str());
    }
    let history = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    history.assert_status(200);
    assert_eq!(history.body["items"].as_array().unwrap().len(), 1);

    // Another channel's storefront does not see them.
    app.post(Admin, "/v1/channels", json!({"id": EU, "name": "EU"}))
        .await
        .assert_status(201);
    let eu_key = ordo_api::auth::create_key_in(&app.pool, Storefront, "eu", Some(EU))
        .await
        .unwrap();
    request(
        &app,
        &eu_key,
        Method::GET,
        &format!("/v1/orders/{order}"),
        None,
    )
    .await
    .assert_problem(404, "not-found");

    // The old storefront key orders for the old customer: the same channel.
    let again = request(
        &app,
        &storefront_key,
        Method::POST,
        "/v1/orders",
        Some(order_body(&customer)),
    )
    .await;
    again.assert_status(201);
    assert_eq!(
        stream_channel(&app, Kind::Order, &again.id()).await,
        "default"
    );

    // Analytics and notifications: `default`'s figures are the totals.
    let sales = |path: String| {
        let app = &app;
        async move {
            let resp = app.get(Analyst, &path).await;
            resp.assert_status(200);
            resp.body["items"].clone()
        }
    };
    let all = sales("/v1/analytics/sales".into()).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["orders"], 1);
    assert_eq!(
        sales("/v1/analytics/sales?channel=default".into()).await,
        all
    );
    assert_eq!(
        sales(format!("/v1/analytics/sales?channel={EU}")).await,
        json!([])
    );
    let funnel = app
        .get(Analyst, "/v1/analytics/funnel?channel=default")
        .await;
    assert_eq!(funnel.body["placed"], 1);
    assert_eq!(
        funnel.body,
        app.get(Analyst, "/v1/analytics/funnel").await.body
    );
    let notifications = request(
        &app,
        &support_key,
        Method::GET,
        "/v1/notifications?channel=default",
        None,
    )
    .await;
    notifications.assert_status(200);
    assert_eq!(notifications.body["items"][0]["channel"], "default");
    assert_eq!(notifications.body["items"][0]["order_id"], order.as_str());

    // The chain the seeded events started still holds with the new order linked to it.
    let verification = ordo_commands::audit::verify(&app.pool, 1, &[], |_| {})
        .await
        .unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.checked, 3);
}
