//! `schemas/asyncapi.yaml`: the NATS contract (docs/API.md) as AsyncAPI 3.0, generated
//! here from the event catalog (`ordo_domain::schema`), the relay's and workers' settings,
//! and checked against the headers the relay really sets.
//!
//! `ORDO_BLESS=1 cargo test -p ordo-workers --test asyncapi` writes the file instead of
//! comparing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::LazyLock;

use chrono::{TimeZone, Utc};
use ordo_commands::feed::{Checkpoint, FeedEvent};
use ordo_domain::schema::{canonical, event_schemas, EventSchema};
use ordo_workers::relay::{self, RelayConfig};
use ordo_workers::{Worker, WorkerConfig};
use serde_json::{json, Map, Value};
use uuid::Uuid;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/asyncapi.yaml")
}

// ---------------------------------------------------------------- the document

/// Every header of an event message, with when the relay sets it.
fn event_headers() -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    json!({
        "type": "object",
        "description": "Headers of every event message. CloudEvents 1.0 in binary content mode: the ce-* headers are the event's attributes, the body its data.",
        "required": [
            "Nats-Msg-Id", "ce-specversion", "ce-id", "ce-type", "ce-source", "ce-subject",
            "ce-time", "content-type", "ordo-position", "ordo-sequence", "ce-ordochannel"
        ],
        "properties": {
            "Nats-Msg-Id": {"type": "string", "format": "uuid", "description": "The event id. JetStream drops a repeat within the stream's duplicate window, so a relay that publishes a batch again duplicates nothing."},
            "ce-specversion": {"const": "1.0", "description": "CloudEvents spec version."},
            "ce-id": {"type": "string", "format": "uuid", "description": "The event id (as Nats-Msg-Id); consumers record it to handle each event once."},
            "ce-type": {"type": "string", "pattern": "^ordo\\.[a-z_]+\\.[a-z_]+\\.v[1-9][0-9]*$", "description": "ordo.<aggregate>.<event>.v<schema version>, e.g. ordo.order.placed.v1. The body matches schemas/events/<aggregate>.<event>.v<N>.json."},
            "ce-source": {"const": "ordo", "description": "The producing system."},
            "ce-subject": string("The aggregate id (order, payment or customer id)."),
            "ce-time": {"type": "string", "format": "date-time", "description": "When the event was recorded (RFC 3339)."},
            "content-type": {"const": "application/json"},
            "ordo-position": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's global position in the event store (decimal). The relay publishes in commit order; redeliveries may reorder."},
            "ordo-sequence": {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The aggregate's version after this event (decimal). Handlers order by it, not by arrival."},
            "ce-ordochannel": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$", "description": "The sales channel of the event's stream (CloudEvents extension attribute `ordochannel`); `default` in a single-channel deployment."},
            "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", "description": "W3C trace context of the command that recorded the event, when it had one."},
            "ordo-correlation-id": string("Correlation id from the event's metadata: the same for every event one request or process caused. Set whenever the metadata has one (always, for events recorded through the API)."),
            "ordo-causation-id": string("Causation id from the event's metadata: the command or event that caused this one. Set whenever the metadata has one."),
        },
    })
}

fn dead_letter_headers() -> Value {
    json!({
        "allOf": [
            {"$ref": "#/components/schemas/EventHeaders"},
            {
                "type": "object",
                "required": ["ordo-dead-letter-reason", "ordo-original-subject", "ordo-attempts"],
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "pattern": "^dlq-", "description": "A fresh id: a dead letter is its own message, not deduplicated against the original."},
                    "ordo-dead-letter-reason": {"type": "string", "description": "Why the worker gave up: the last handler error."},
                    "ordo-original-subject": {"type": "string", "description": "The subject the message was consumed from, e.g. ordo.events.order.placed."},
                    "ordo-attempts": {"type": "string", "pattern": "^[0-9]+$", "description": "How many deliveries were tried."},
                },
            },
        ],
    })
}

fn event_message(schema: &EventSchema) -> Value {
    json!({
        "name": schema.event_type,
        "title": format!("{} v{}", schema.event_type, schema.version),
        "summary": schema.schema["description"],
        "contentType": "application/json",
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/EventHeaders"},
                {"type": "object", "properties": {"ce-type": {"const": schema.ce_type()}}},
            ],
        },
        "payload": {"$ref": format!("./events/{}", schema.file_name())},
        "correlationId": {"$ref": "#/components/correlationIds/correlation"},
    })
}

/// `order.placed.v1`.
fn message_id(schema: &EventSchema) -> String {
    format!("{}.v{}", schema.event_type, schema.version)
}

fn document() -> Vec<(&'static str, Value)> {
    let schemas = event_schemas();
    let events = RelayConfig::new("").subject_prefix;
    let dlq = WorkerConfig::new("").dlq_prefix;
    let workers: Vec<&str> = Worker::ALL.iter().map(|w| w.name()).collect();

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for schema in &schemas {
        let channel = schema.event_type;
        let id = message_id(schema);
        channels.insert(
            channel.into(),
            json!({
                "address": format!("{events}.{channel}"),
                "title": channel,
                "description": schema.schema["description"],
                "messages": {id.clone(): {"$ref": format!("#/components/messages/{id}")}},
            }),
        );
        operations.insert(
            format!("relay.send.{channel}"),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{channel}")},
                "summary": format!("The relay publishes every {channel} event once it is committed, in commit order, and moves its checkpoint only after JetStream acknowledged."),
            }),
        );
        for worker in &workers {
            operations.insert(
                format!("{worker}.receive.{channel}"),
                json!({
                    "action": "receive",
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "summary": format!("The {worker} worker's durable pull consumer (explicit ack) receives it; events it has no use for are acknowledged and skipped."),
                }),
            );
        }
        messages.insert(id, event_message(schema));
    }
    channels.insert(
        "deadLetters".into(),
        json!({
            "address": format!("{dlq}.{{worker}}"),
            "title": "Dead letters",
            "description": "Stream ORDO_DLQ. A message a worker failed to handle within its allowed deliveries (with backoff between them) is published here with the original body and headers plus the reason, then terminated on the event stream. Operators list, redrive or drop dead letters through the API.",
            "parameters": {"worker": {"enum": workers, "description": "The worker that gave up."}},
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        }),
    );
    for worker in &workers {
        operations.insert(
            format!("{worker}.send.deadLetter"),
            json!({
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "summary": format!("The {worker} worker dead-letters a message it could not handle to {dlq}.{worker}."),
            }),
        );
    }
    messages.insert(
        "deadLetter".into(),
        json!({
            "name": "deadLetter",
            "title": "Dead letter",
            "summary": "An event message a worker gave up on, its body unchanged.",
            "contentType": "application/json",
            "headers": dead_letter_headers(),
            "payload": {"description": "The original message's body, unchanged: normally one of the event payloads, but whatever arrived (a message that failed because its body was no JSON is dead-lettered too)."},
        }),
    );

    vec![
        ("asyncapi", json!("3.0.0")),
        (
            "info",
            json!({
                "title": "Ordo events",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Ordo's events on NATS JetStream. The relay publishes every event of the event store, in commit order, to the stream ORDO_EVENTS on one subject per event type; the body is the event's JSON data (schemas/events/) and the headers carry its CloudEvents attributes. The notification, analytics and integration workers consume the stream as durable pull consumers. Versioning: ce-type ends in .v<N>, and a released schema version never changes; a new shape is a new version, and older stored events are upcast on read.\n\nGenerated by workers/tests/asyncapi.rs: regenerate with ORDO_BLESS=1 cargo test -p ordo-workers --test asyncapi.",
            }),
        ),
        ("defaultContentType", json!("application/json")),
        (
            "servers",
            json!({
                "nats": {
                    "host": "127.0.0.1:4222",
                    "protocol": "nats",
                    "description": "NATS with JetStream (NATS_URL, default nats://127.0.0.1:4222). Streams: ORDO_EVENTS (subjects ordo.events.>, file storage, a two-minute duplicate window on Nats-Msg-Id) and ORDO_DLQ (subjects ordo.dlq.>).",
                },
            }),
        ),
        ("channels", Value::Object(channels)),
        ("operations", Value::Object(operations)),
        (
            "components",
            json!({
                "messages": messages,
                "schemas": {"EventHeaders": event_headers()},
                "correlationIds": {
                    "correlation": {
                        "description": "Events one request or process caused share a correlation id.",
                        "location": "$message.header#/ordo-correlation-id",
                    },
                },
            }),
        ),
    ]
}

/// YAML with the top-level sections in reading order and every map's keys sorted below
/// them, so the text does not depend on serde_json's features.
fn yaml(document: &[(&str, Value)]) -> String {
    let mut text = String::from(
        "# Generated by workers/tests/asyncapi.rs from the event catalog; do not edit.\n\
         # Regenerate: ORDO_BLESS=1 cargo test -p ordo-workers --test asyncapi\n",
    );
    for (key, value) in document {
        let mut section = serde_norway::Mapping::new();
        let value: serde_norway::Value =
            serde_norway::to_value(canonical(value.clone())).expect("JSON converts to YAML");
        section.insert((*key).into(), value);
        text.push_str(&serde_norway::to_string(&section).unwrap());
    }
    text
}

/// The file's text; with `ORDO_BLESS` the first caller writes it from the code.
fn on_disk() -> String {
    static BLESSED: LazyLock<()> = LazyLock::new(|| {
        if std::env::var_os("ORDO_BLESS").is_some() {
            std::fs::write(path(), yaml(&document())).unwrap();
        }
    });
    LazyLock::force(&BLESSED);
    std::fs::read_to_string(path()).unwrap_or_default()
}

fn checked_in() -> Value {
    serde_norway::from_str(&on_disk()).expect("schemas/asyncapi.yaml is YAML")
}

// ---------------------------------------------------------------- tests

#[test]
fn the_checked_in_asyncapi_is_what_the_code_generates() {
    let generated = yaml(&document());
    let on_disk = on_disk();
    assert!(
        on_disk == generated,
        "schemas/asyncapi.yaml differs from the code: run \
         `ORDO_BLESS=1 cargo test -p ordo-workers --test asyncapi`, review the diff and commit it"
    );
    let parsed: Value = serde_norway::from_str(&on_disk).unwrap();
    let expected: Map<String, Value> = document()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(
        parsed,
        Value::Object(expected),
        "the YAML reads back as the document"
    );
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                out.insert(target.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_asyncapi_references_every_event_schema_file_and_every_reference_resolves() {
    let doc = checked_in();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);

    let files: BTreeSet<String> = all
        .iter()
        .filter_map(|r| r.strip_prefix("./events/"))
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = event_schemas().iter().map(|s| s.file_name()).collect();
    assert_eq!(
        files, expected,
        "payloads must reference every current event schema"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events");
    for file in &files {
        assert!(dir.join(file).is_file(), "schemas/events/{file} is missing");
    }

    for internal in all.iter().filter_map(|r| r.strip_prefix('#')) {
        assert!(
            doc.pointer(internal).is_some(),
            "#{internal} resolves to nothing"
        );
    }

    for schema in event_schemas() {
        let channel = &doc["channels"][schema.event_type];
        assert_eq!(
            channel["address"],
            format!("ordo.events.{}", schema.event_type)
        );
        let message = &doc["components"]["messages"][message_id(&schema)];
        assert_eq!(
            message["headers"]["allOf"][1]["properties"]["ce-type"]["const"],
            schema.ce_type()
        );
        for worker in Worker::ALL {
            let op = &doc["operations"][format!("{}.receive.{}", worker.name(), schema.event_type)];
            assert_eq!(op["action"], "receive");
        }
        assert_eq!(
            doc["operations"][format!("relay.send.{}", schema.event_type)]["action"],
            "send"
        );
    }
    assert_eq!(
        doc["channels"]["deadLetters"]["address"],
        "ordo.dlq.{worker}"
    );
}

fn feed_event(metadata: Value) -> FeedEvent {
    FeedEvent {
        checkpoint: Checkpoint::at(42),
        event_id: Uuid::now_v7(),
        aggregate_type: "order".into(),
        aggregate_id: Uuid::now_v7().to_string(),
        sequence: 3,
        event_type: "order.confirmed".into(),
        event_version: "1".into(),
        recorded_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        payload: "{}".into(),
        metadata: metadata.to_string(),
        channel: "default".into(),
    }
}

fn header_names(event: &FeedEvent) -> BTreeSet<String> {
    relay::headers(event)
        .iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn the_documented_headers_are_exactly_the_ones_the_relay_sets() {
    let doc = checked_in();
    let schema = &doc["components"]["schemas"]["EventHeaders"];
    let documented: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    let full = feed_event(json!({
        "correlation_id": Uuid::now_v7().to_string(),
        "causation_id": Uuid::now_v7().to_string(),
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }));
    assert_eq!(
        header_names(&full),
        documented,
        "every header, and only those"
    );
    let bare = feed_event(json!({}));
    assert_eq!(
        header_names(&bare),
        required,
        "the required headers are those set without metadata"
    );
}
