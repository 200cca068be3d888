//! `GET /openapi.json`, `GET /docs`, and the document against the router that serves it.

use ordo_api::Role::{Admin, Storefront, Support};
use serde_json::{json, Value};

use crate::helpers::{read, spawn_app};

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

/// `(method, path)` of every operation whose responses lack `status`, among `ops`.
fn lacking(doc: &Value, ops: &[(&str, &str)], status: &str) -> Vec<String> {
    ops.iter()
        .filter(|(method, path)| {
            doc["paths"][*path][*method]["responses"]
                .get(status)
                .is_none()
        })
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
}

/// The lists' 403s, answered by the server, are in the document: a key scoped to one
/// channel naming another, and a storefront listing customers without `email`. (That every
/// operation taking `channel` lists 403 is checked on the document alone, in
/// `api/src/openapi/tests.rs`.)
#[tokio::test]
async fn the_lists_403s_are_documented() {
    let app = spawn_app().await;
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    for (id, name) in [("eu-web", "EU web shop"), ("us-web", "US web shop")] {
        app.post(Admin, "/v1/channels", json!({"id": id, "name": name}))
            .await
            .assert_status(201);
    }
    let scoped = ordo_api::auth::create_key_in(&app.pool, Support, "eu support", Some("eu-web"))
        .await
        .unwrap();

    let mut answered = Vec::new();
    for list in ["/v1/orders", "/v1/payments", "/v1/customers"] {
        let resp = read(
            app.client
                .get(app.url(&format!("{list}?channel=us-web")))
                .bearer_auth(&scoped)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            resp.status, 403,
            "GET {list}?channel=us-web: {:?}",
            resp.body
        );
        answered.push(("get", list));
    }
    app.get(Storefront, "/v1/customers")
        .await
        .assert_status(403);

    let missing = lacking(&doc, &answered, "403");
    assert!(
        missing.is_empty(),
        "answered 403, not documented: {missing:?}"
    );
}

/// The caps on unbounded streams are in the 409 of the operations that enforce them, with
/// the rule's name and the number the code uses.
#[test]
fn the_caps_are_in_their_operations_409() {
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    for (path, rule, cap) in [
        (
            "/v1/payments",
            "too-many-payments",
            ordo_commands::service::MAX_PAYMENTS_PER_ORDER.to_string(),
        ),
        (
            "/v1/customers/{id}/notes",
            "too-many-notes",
            ordo_domain::customer::MAX_NOTES.to_string(),
        ),
    ] {
        let reference = doc["paths"][path]["post"]["responses"]["409"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path} 409 is a component"));
        let name = reference.trim_start_matches("#/components/responses/");
        let conflict = &doc["components"]["responses"][name];
        let description = conflict["description"].as_str().unwrap_or_default();
        assert!(
            description.contains(&format!("`{rule}`")) && description.contains(&format!(" {cap} ")),
            "POST {path} 409: {conflict}"
        );
        assert!(
            conflict["content"]["application/problem+json"].is_object(),
            "POST {path} 409 is a problem: {conflict}"
        );
    }
}

/// Operation ids are unique (OpenAPI requires it; the two PATCH routes were both `update`).
#[test]
fn operation_ids_are_unique() {
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    let mut ids = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            ids.push(
                operation["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "{ids:?}");
}

/// The server reads an empty body as `{}`, so a body with no required field may be left
/// out, and the document says so (schemathesis found `POST /v1/audit/verifications`
/// accepting no body where the document required one).
#[tokio::test]
async fn a_body_without_required_fields_is_optional_in_the_document() {
    let app = spawn_app().await;
    let doc: Value = ordo_api::openapi::spec_json().parse().unwrap();
    let schema_of = |body: &Value| -> Value {
        let schema = &body["content"]["application/json"]["schema"];
        match schema["$ref"].as_str() {
            Some(r) => {
                doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")].clone()
            }
            None => schema.clone(),
        }
    };
    let mut optional = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            let needs_fields = schema_of(body)["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            assert_eq!(
                body["required"] == true,
                needs_fields,
                "{method} {path}: {body}"
            );
            if !needs_fields {
                optional.push(format!("{method} {path}"));
            }
        }
    }
    for wanted in ["post /v1/audit/verifications", "patch /v1/channels/{id}"] {
        assert!(optional.contains(&wanted.to_owned()), "{optional:?}");
    }

    let resp = read(
        app.client
            .post(app.url("/v1/audit/verifications"))
            .bearer_auth(app.key(Admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    resp.assert_status(202);
}
