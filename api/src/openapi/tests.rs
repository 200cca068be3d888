//! The checked-in document is the generated one, and it says what the contract says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use super::spec_json;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json")
}

/// `ORDO_BLESS=1 cargo test -p ordo-api openapi` rewrites the file instead.
#[test]
fn the_checked_in_openapi_document_matches_the_code() {
    let generated = spec_json();
    let path = checked_in();
    if std::env::var_os("ORDO_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("schemas/ has a parent")).expect("mkdir");
        std::fs::write(&path, &generated).expect("write schemas/openapi.json");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "schemas/openapi.json is out of date with the code; regenerate it with \
         `ORDO_BLESS=1 cargo test -p ordo-api openapi` and review the diff"
    );
}

fn document() -> Value {
    serde_json::from_str(&spec_json()).expect("the document is JSON")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_is_openapi_3_1_with_every_route_of_the_contract() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations(&doc), expected);
}

#[test]
fn only_the_operations_routes_are_exempt_from_the_api_key() {
    let doc = document();
    assert_eq!(doc["security"], serde_json::json!([{"api_key": []}]));
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let exempt = op.get("security") == Some(&serde_json::json!([]));
        assert_eq!(exempt, !path.starts_with("/v1/"), "{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        if !exempt {
            assert!(
                responses.contains_key("401"),
                "{method} {path} documents 401"
            );
            assert!(
                responses.contains_key("429"),
                "{method} {path} documents the rate limit's 429"
            );
        }
        for (status, response) in responses {
            // Not ready / down is a health report (what is down), not a problem.
            if (path == "/readyz" || path == "/healthz") && status == "503" {
                continue;
            }
            if status.starts_with('4') || status.starts_with('5') {
                let reference = response["$ref"].as_str().unwrap_or_default();
                assert!(
                    reference.starts_with("#/components/responses/"),
                    "{method} {path} {status} is a problem component"
                );
            }
        }
    }
}

/// The HTTP contract (docs/API.md), as the router serves it today.
const CONTRACT: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/channels"),
    ("POST", "/v1/channels"),
    ("GET", "/v1/channels/{id}"),
    ("PATCH", "/v1/channels/{id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/v1/orders"),
    ("GET", "/v1/orders"),
    ("GET", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/confirm"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("POST", "/v1/orders/{id}/ship"),
    ("POST", "/v1/orders/{id}/deliver"),
    ("GET", "/v1/orders/{id}/history"),
    ("POST", "/v1/audit/checkpoints"),
    ("GET", "/v1/audit/checkpoints"),
    ("POST", "/v1/audit/verifications"),
    ("GET", "/v1/audit/verifications/{id}"),
    ("GET", "/v1/orders/{id}/state"),
    ("POST", "/v1/payments"),
    ("GET", "/v1/payments"),
    ("GET", "/v1/payments/{id}"),
    ("POST", "/v1/payments/{id}/authorize"),
    ("POST", "/v1/payments/{id}/capture"),
    ("POST", "/v1/payments/{id}/refund"),
    ("POST", "/v1/payments/{id}/void"),
    ("POST", "/v1/payments/{id}/fail"),
    ("GET", "/v1/payments/{id}/history"),
    ("GET", "/v1/payments/{id}/state"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers"),
    ("GET", "/v1/customers/{id}"),
    ("POST", "/v1/customers/{id}/notes"),
    ("POST", "/v1/customers/{id}/erase"),
    ("GET", "/v1/customers/{id}/history"),
    ("GET", "/v1/customers/{id}/state"),
    ("GET", "/v1/projections"),
    ("POST", "/v1/projections/{name}/rebuild"),
    ("GET", "/v1/workers"),
    ("POST", "/v1/workers/{name}/replay"),
    ("GET", "/v1/dead-letters"),
    ("POST", "/v1/dead-letters/redrive"),
    ("POST", "/v1/dead-letters/{id}/redrive"),
    ("GET", "/v1/notifications"),
    ("GET", "/v1/analytics/sales"),
    ("GET", "/v1/analytics/funnel"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("POST", "/v1/keys/{id}/revoke"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{id}"),
    ("PATCH", "/v1/webhooks/{id}"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("POST", "/v1/webhooks/{id}/disable"),
    ("POST", "/v1/webhooks/{id}/enable"),
    ("POST", "/v1/webhooks/{id}/rotate-secret"),
    ("POST", "/v1/webhooks/{id}/test"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
    ("GET", "/v1/webhooks/{id}/deliveries/{delivery_id}"),
    ("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
];

/// A parameter of an operation, resolved if it is a reference.
fn parameter<'a>(doc: &'a Value, param: &'a Value) -> &'a Value {
    match param["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            &doc["components"]["parameters"][name]
        }
        None => param,
    }
}

/// An operation taking `?channel=` answers 403 (`channel-forbidden`) to a key scoped to
/// another channel: it says so, and the problem components name the channel rules.
#[test]
fn every_operation_with_a_channel_parameter_documents_its_403() {
    let doc = document();
    let mut with_channel = Vec::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params.iter().any(|p| {
            let p = parameter(&doc, p);
            p["name"] == "channel" && p["in"] == "query"
        }) {
            assert!(
                op["responses"].get("403").is_some(),
                "{method} {path} takes `channel` but does not list 403"
            );
            with_channel.push(path);
        }
    }
    for list in [
        "/v1/orders",
        "/v1/payments",
        "/v1/customers",
        "/v1/notifications",
    ] {
        assert!(
            with_channel.contains(&list.to_owned()),
            "{list}: {with_channel:?}"
        );
    }
    let description = |name: &str| {
        doc["components"]["responses"][name]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(description("Forbidden").contains("`channel-forbidden`"));
    assert!(description("Conflict").contains("`channel-mismatch`"));
    assert!(
        doc["components"]["schemas"]["Notification"]["properties"]
            .get("channel")
            .is_some(),
        "a notification shows its channel"
    );
}

/// Every operation of the document by its id.
fn by_operation_id(doc: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (method, path) in operations(doc) {
        let op = doc["paths"][&path][method.to_lowercase()].clone();
        let id = op["operationId"]
            .as_str()
            .expect("every operation has an id");
        out.insert(id.to_owned(), op);
    }
    out
}

/// Closed sets the server checks are enums in the document, the same as the code's.
#[test]
fn the_closed_sets_are_the_codes() {
    let doc = document();
    let ops = by_operation_id(&doc);
    let enum_of = |operation: &str, name: &str| -> Vec<String> {
        let param = ops[operation]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| parameter(&doc, p))
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{operation} has `{name}`"));
        serde_json::from_value(param["schema"]["enum"].clone())
            .unwrap_or_else(|_| panic!("{operation} `{name}` is an enum"))
    };
    let workers: Vec<String> = ordo_workers::Worker::ALL
        .iter()
        .map(|w| w.name().to_owned())
        .collect();
    assert_eq!(enum_of("workers_replay", "name"), workers);
    assert_eq!(
        enum_of("webhooks_list_deliveries", "status"),
        ordo_workers::integration::outbox::STATUSES
    );
}

/// A shipping address is read by serde, whose `Address` takes any key, so the API lists its
/// fields by hand to refuse the others: the list must be the schema's, or a new field of
/// `Address` would be refused.
#[test]
fn the_address_fields_refused_around_are_the_schemas() {
    let doc = document();
    let mut properties: Vec<&str> = doc["components"]["schemas"]["Address"]["properties"]
        .as_object()
        .expect("Address has properties")
        .keys()
        .map(String::as_str)
        .collect();
    properties.sort_unstable();
    let mut listed = crate::routes::orders::ADDRESS_FIELDS.to_vec();
    listed.sort_unstable();
    assert_eq!(listed, properties);
}
