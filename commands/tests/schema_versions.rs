//! Every released event schema version older than the one the code writes is upcast on
//! read, and the current one is not: a schema change without an upcaster fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ordo_commands::store::needs_upcast;
use ordo_domain::schema::event_schemas;

/// `(event type, version)` of every file listed in `schemas/events/RELEASED`.
fn released() -> Vec<(String, u32)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events/RELEASED");
    let text = std::fs::read_to_string(&path).expect("schemas/events/RELEASED exists");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let file = line.split_whitespace().nth(1).expect("`<sha256>  <file>`");
            let stem = file.strip_suffix(".json").expect("a .json file");
            let (event_type, version) = stem.rsplit_once(".v").expect("<type>.v<N>.json");
            (
                event_type.to_owned(),
                version.parse().expect("a numeric version"),
            )
        })
        .collect()
}

#[test]
fn every_released_older_schema_version_has_an_upcaster_and_the_current_one_none() {
    let current: BTreeMap<&str, u32> = event_schemas()
        .iter()
        .map(|s| (s.event_type, s.version))
        .collect();
    let released = released();
    assert!(!released.is_empty());
    for (event_type, version) in released {
        let now = current[event_type.as_str()];
        if version < now {
            assert!(
                needs_upcast(&event_type, &version.to_string()),
                "{event_type} v{version} is released and the code writes v{now}: stored \
                 v{version} events need an upcaster in ordo_commands::store::upcasters"
            );
        }
    }
    for (event_type, version) in current {
        assert!(
            !needs_upcast(event_type, &version.to_string()),
            "{event_type} v{version} is the current version: nothing may upcast it"
        );
    }
}
