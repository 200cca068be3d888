//! The role matrix (docs/API.md), route by route: 401 without a valid key, 403 for a role
//! the route does not admit, and anything but 401/403 for one it does.

use ordo_api::Role::{self, Admin, Analyst, Storefront, Support};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{read, spawn_app};

const ID: &str = "00000000-0000-0000-0000-00000000abcd";

fn matrix() -> Vec<(Method, String, Vec<Role>)> {
    let commands = vec![Storefront, Admin];
    let readers = vec![Storefront, Support, Analyst, Admin];
    let auditors = vec![Support, Admin];
    let mut routes = vec![
        (Method::POST, "/v1/orders".to_owned(), commands.clone()),
        (Method::POST, "/v1/payments".to_owned(), commands.clone()),
        (Method::POST, "/v1/customers".to_owned(), commands.clone()),
        (
            Method::POST,
            format!("/v1/customers/{ID}/notes"),
            vec![Support, Admin],
        ),
        (
            Method::POST,
            format!("/v1/orders/{ID}/cancel"),
            vec![Storefront, Support, Admin],
        ),
    ];
    for action in ["confirm", "ship", "deliver"] {
        routes.push((
            Method::POST,
            format!("/v1/orders/{ID}/{action}"),
            commands.clone(),
        ));
    }
    for action in ["authorize", "capture", "void", "refund", "fail"] {
        routes.push((
            Method::POST,
            format!("/v1/payments/{ID}/{action}"),
            commands.clone(),
        ));
    }
    for collection in ["orders", "payments", "customers"] {
        routes.push((
            Method::GET,
            format!("/v1/{collection}/{ID}"),
            readers.clone(),
        ));
        routes.push((
            Method::GET,
            format!("/v1/{collection}/{ID}/history"),
            auditors.clone(),
        ));
        routes.push((
            Method::GET,
            format!("/v1/{collection}/{ID}/state?version=1"),
            auditors.clone(),
        ));
    }
    routes
}

#[tokio::test]
async fn every_route_admits_exactly_its_roles() {
    let app = spawn_app().await;
    for (method, path, allowed) in matrix() {
        let request = || {
            app.client
                .request(method.clone(), app.url(&path))
                .json(&json!({}))
        };

        let anonymous = read(request().send().await.unwrap()).await;
        anonymous.assert_problem(401, "unauthorized");
        assert_eq!(
            anonymous.header("www-authenticate"),
            Some("Bearer"),
            "{method} {path}"
        );

        let bad_key = read(
            request()
                .bearer_auth("ordo_not_a_key")
                .send()
                .await
                .unwrap(),
        )
        .await;
        bad_key.assert_problem(401, "unauthorized");

        for role in Role::ALL {
            let resp = read(request().bearer_auth(app.key(role)).send().await.unwrap()).await;
            if allowed.contains(&role) {
                assert!(
                    resp.status != 401 && resp.status != 403,
                    "{method} {path} should admit {role}, got {}",
                    resp.status
                );
            } else {
                assert_eq!(
                    resp.status, 403,
                    "{method} {path} should refuse {role}: {:?}",
                    resp.body
                );
                assert_eq!(resp.problem(), "forbidden");
            }
        }
    }
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let app = spawn_app().await;
    let health = read(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    health.assert_status(200);
    let ready = read(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    ready.assert_status(200);
    assert_eq!(ready.body["checks"]["postgres"]["status"], "up");
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let key = app.key(Storefront).to_owned();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM auth.api_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|h| h.len() == 32 && *h != key.as_bytes()));
    // A revoked key stops working (after the short cache, which a fresh key never hit).
    let fresh = ordo_api::create_key(&app.pool, Admin, "short-lived")
        .await
        .unwrap();
    sqlx::query("UPDATE auth.api_keys SET revoked_at = now() WHERE name = 'short-lived'")
        .execute(&app.pool)
        .await
        .unwrap();
    let resp = read(
        app.client
            .get(app.url(&format!("/v1/orders/{ID}")))
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap(),
    )
    .await;
    resp.assert_problem(401, "unauthorized");
}

/// An unknown key is remembered as unknown for a few seconds (`UNKNOWN_KEY_TTL`), so a client
/// repeating it costs no lookup of `auth.api_keys` per request. Observed by taking the table
/// away after the first refusal: the repeats are still plain 401s (answered from the cache),
/// while a key not seen before — which must be looked up — now fails otherwise.
#[tokio::test]
async fn an_unknown_key_is_looked_up_once_within_the_cache_window() {
    let app = spawn_app().await;
    let get = |key: &'static str| {
        let request = app.client.get(app.url("/v1/orders")).bearer_auth(key);
        async move { read(request.send().await.unwrap()).await }
    };
    get("ordo_unknown_repeated")
        .await
        .assert_problem(401, "unauthorized");

    sqlx::query("ALTER TABLE auth.api_keys RENAME TO api_keys_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut repeats = Vec::new();
    for _ in 0..5 {
        repeats.push(get("ordo_unknown_repeated").await);
    }
    let fresh = get("ordo_unknown_fresh").await;
    sqlx::query("ALTER TABLE auth.api_keys_away RENAME TO api_keys")
        .execute(&app.pool)
        .await
        .unwrap();

    for resp in &repeats {
        resp.assert_problem(401, "unauthorized");
    }
    assert_ne!(
        fresh.status, 401,
        "a key not seen before is looked up, and the lookup fails without the table: {:?}",
        fresh.body
    );
    assert_ne!(fresh.status, 200);
}
