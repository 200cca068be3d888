//! Test builds only: every event a `decide` returns during the domain's own tests is
//! checked against its checked-in schema file, as stored (with the `type` tag) and as NATS
//! carries it (without). So the files describe what the code really emits, in every case
//! the example and property tests reach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;

use crate::event::EventName;

/// Every `*.json` schema under `schemas/events/`, compiled once per test binary.
static VALIDATORS: LazyLock<HashMap<String, jsonschema::Validator>> = LazyLock::new(|| {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events");
    let mut validators = HashMap::new();
    for entry in std::fs::read_dir(&dir).expect("schemas/events/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name == "index.json" {
            continue;
        }
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"));
        validators.insert(name, validator);
    }
    validators
});

/// Panics (fails the test) when an emitted event does not match its schema file.
pub(crate) fn check<E: Serialize + EventName, X>(decided: &Result<Vec<E>, X>) {
    for event in decided.iter().flatten() {
        assert_conforms(event);
    }
}

pub(crate) fn assert_conforms<E: Serialize + EventName>(event: &E) {
    let file = super::file_name(event.name(), event.schema_version());
    let validator = VALIDATORS.get(&file).unwrap_or_else(|| {
        panic!(
            "the domain emits {} v{} but schemas/events/{file} does not exist: \
             run `ORDO_BLESS=1 cargo test -p ordo-domain --test event_schemas`",
            event.name(),
            event.schema_version()
        )
    });
    let stored = serde_json::to_value(event).unwrap();
    let mut body = stored.clone();
    if let Value::Object(fields) = &mut body {
        fields.remove("type");
    }
    for (shape, instance) in [("stored", &stored), ("NATS body", &body)] {
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{shape} {} does not match schemas/events/{file}:\n  {}\n{instance:#}",
            event.name(),
            errors.join("\n  ")
        );
    }
}
