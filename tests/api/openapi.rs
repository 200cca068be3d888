//! `GET /openapi.json`, `GET /docs`, and the document against the router that serves it.

use serde_json::Value;

use crate::helpers::spawn_app;

/// Every `src="..."` and `href="..."` in a page.
fn asset_urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attr) {
            rest = &rest[start + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_without_a_key_and_is_openapi_3_1() {
    let app = spawn_app().await;

    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc,
        ordo_api::openapi::spec_json().parse::<Value>().unwrap()
    );
}

#[tokio::test]
async fn the_docs_page_works_offline_with_every_asset_served_by_ordo() {
    let app = spawn_app().await;

    let resp = app.client.get(app.url("/docs")).send().await.unwrap();

    assert_eq!(resp.status(), 200);
    let page_url = resp.url().clone();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    let assets = asset_urls(&html);
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "the page loads scripts and styles: {assets:?}"
    );
    for asset in &assets {
        assert!(
            !asset.contains("://") && !asset.starts_with("//"),
            "{asset} is not served by Ordo"
        );
        let url = page_url.join(asset).unwrap();
        let resp = app.client.get(url.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("https://unpkg.com") && !body.contains("cdn.jsdelivr"),
            "{url} pulls from a CDN"
        );
    }
    // The initializer points Swagger UI at Ordo's own document.
    let init = app
        .client
        .get(page_url.join("swagger-initializer.js").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
}

/// The other half of "one list of routes": every operation the document describes is
/// routed to a handler (never to the router's 404 or 405 fallback).
#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let app = spawn_app().await;
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    let id = "018f0000-0000-7000-8000-000000000000";

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let url = app.url(&path.replace("{id}", id).replace("{name}", "nope"));
            let resp = app
                .client
                .request(method.to_uppercase().parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is not routed");
            assert!(
                !(status == 404 && body.contains("no such route")),
                "{method} {path} is not routed"
            );
        }
    }
}

/// The document says what the server enforces: `If-Match` has its pattern, `version` and
/// `at` say they exclude each other, `from` ≤ `to` is stated, and every `/v1` operation
/// lists the statuses the middleware in front of it can answer (408, 429, 503), each
/// command 422, and each command on an existing stream 412.
#[test]
fn the_document_states_the_limits_the_server_enforces() {
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} has `{name}`"))
    };

    let if_match = param("/v1/orders/{id}/confirm", "post", "If-Match");
    let pattern = if_match["schema"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, r#"^(\*|"[0-9]{1,18}")$"#);
    for (name, other) in [("version", "`at`"), ("at", "`version`")] {
        let p = param("/v1/orders/{id}/state", "get", name);
        let description = p["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("Exclusive with {other}")),
            "{description}"
        );
    }
    let from = param("/v1/analytics/sales", "get", "from");
    assert!(from["description"]
        .as_str()
        .unwrap()
        .contains("Must not be after `to`"));
    let amount = &doc["components"]["schemas"]["PositiveAmount"];
    assert_eq!(amount["maximum"], 1_000_000_000_000_000_i64);

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let statuses = operation["responses"].as_object().unwrap();
            for status in ["408", "429", "503"] {
                assert!(
                    statuses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            let command = method == "post"
                && operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
            if command {
                assert!(statuses.contains_key("422"), "{method} {path} lacks 422");
                if path.contains("{id}") {
                    assert!(statuses.contains_key("412"), "{method} {path} lacks 412");
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} operations");
}
