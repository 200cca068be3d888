//! The event schemas under `schemas/events/`: equal to what the code generates, released
//! versions frozen, one file per event type, and every emitted event valid against its file.
//!
//! `ORDO_BLESS=1 cargo test -p ordo-domain --test event_schemas` writes the generated files
//! and lists new ones in `RELEASED` instead of failing; it never rewrites a released file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use ordo_domain::customer::{Customer, CustomerCommand, CustomerEvent, RegisterCustomer};
use ordo_domain::event::EventName;
use ordo_domain::order::{
    NewLine, Order, OrderCommand, OrderEvent, OrderPaymentStatus, PlaceOrder, ShipOrder,
};
use ordo_domain::payment::{CreatePayment, OrderFacts, Payment, PaymentCommand, PaymentEvent};
use ordo_domain::schema::{event_schemas, file_text, index, EventSchema};
use ordo_domain::values::{Address, CountryCode, Email, Quantity, Sku, Text};
use ordo_domain::{Amount, Currency};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

// ---------------------------------------------------------------- files

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events")
}

const BLESS: &str = "ORDO_BLESS=1 cargo test -p ordo-domain --test event_schemas";

fn blessing() -> bool {
    std::env::var_os("ORDO_BLESS").is_some()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `RELEASED`: `sha256sum` lines (`<hex>  <file>`), so `sha256sum -c RELEASED` works too.
fn released() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("RELEASED")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (hash, file) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("RELEASED: `{l}` is not `<sha256>  <file>`"));
            (file.trim().to_owned(), hash.trim().to_owned())
        })
        .collect()
}

fn write_released(released: &BTreeMap<String, String>) {
    let mut text = String::from(
        "# Released event schemas: a listed file never changes. A new shape is a new version\n\
         # (a new file) with an upcaster; see README, \"Schemas\". Check: sha256sum -c RELEASED\n",
    );
    for (file, hash) in released {
        text.push_str(&format!("{hash}  {file}\n"));
    }
    std::fs::write(dir().join("RELEASED"), text).unwrap();
}

/// Schema files on disk (`index.json` is no schema of an event).
fn files_on_disk() -> BTreeSet<String> {
    std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "index.json")
        .collect()
}

fn frozen_message(file: &str) -> String {
    format!(
        "schemas/events/{file} is released and may never change, but the code now describes \
         that event differently. Keep {file} as it is and give the event a new version: make \
         its `EventName::schema_version` return the next number, list that number in \
         `ordo_domain::schema::event_schemas`, add an upcaster from the old version in \
         `ordo_commands::store::upcasters`, then run `{BLESS}` and commit the new file. (Only a version that never reached \
         main may change: drop its line from RELEASED and bless again.)"
    )
}

/// What the code generates, as `(file, text)`.
fn generated() -> Vec<(String, String)> {
    let schemas = event_schemas();
    let mut files: Vec<(String, String)> = schemas
        .iter()
        .map(|s| (s.file_name(), s.file_text()))
        .collect();
    files.push(("index.json".into(), file_text(&index(&schemas))));
    files
}

/// Tests that read or write the directory take turns; with `ORDO_BLESS` the first of them
/// writes the files (refusing to touch a released one) and lists new ones in `RELEASED`.
fn files_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static BLESSED: LazyLock<()> = LazyLock::new(|| {
        if blessing() {
            bless();
        }
    });
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    LazyLock::force(&BLESSED);
    guard
}

fn bless() {
    std::fs::create_dir_all(dir()).unwrap();
    let mut released = released();
    for (file, text) in generated() {
        if let Some(hash) = released.get(&file) {
            assert_eq!(*hash, sha256(text.as_bytes()), "{}", frozen_message(&file));
        }
        std::fs::write(dir().join(&file), &text).unwrap();
    }
    for file in files_on_disk() {
        let path = dir().join(&file);
        released
            .entry(file)
            .or_insert_with(|| sha256(&std::fs::read(path).unwrap()));
    }
    write_released(&released);
}

// ---------------------------------------------------------------- drift and frozen

#[test]
fn the_checked_in_schemas_and_index_are_what_the_code_generates() {
    let _files = files_lock();
    let released = released();
    let mut stale = Vec::new();
    for (file, text) in generated() {
        if let Some(hash) = released.get(&file) {
            assert_eq!(*hash, sha256(text.as_bytes()), "{}", frozen_message(&file));
        }
        let on_disk = std::fs::read_to_string(dir().join(&file)).unwrap_or_default();
        if on_disk != text {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/events/ differs from the code in {stale:?}: run `{BLESS}`, review the diff \
         and commit it"
    );
}

#[test]
fn released_schemas_never_change_and_every_schema_file_is_listed_as_released() {
    let _files = files_lock();
    let released = released();
    assert!(
        !released.is_empty(),
        "schemas/events/RELEASED lists nothing"
    );
    for (file, hash) in &released {
        let bytes = std::fs::read(dir().join(file))
            .unwrap_or_else(|_| panic!("schemas/events/{file} is released but gone: restore it"));
        assert_eq!(sha256(&bytes), *hash, "{}", frozen_message(file));
    }
    let unlisted: Vec<String> = files_on_disk()
        .into_iter()
        .filter(|f| !released.contains_key(f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "{unlisted:?} are not in schemas/events/RELEASED: run `{BLESS}`"
    );
}

#[test]
fn every_schema_file_is_a_current_version_or_a_released_older_one() {
    let _files = files_lock();
    let released = released();
    let current: BTreeMap<&str, u32> = event_schemas()
        .iter()
        .map(|s| (s.event_type, s.version))
        .collect();
    for file in files_on_disk() {
        let (event_type, version) = parse_file_name(&file);
        let Some(&now) = current.get(event_type.as_str()) else {
            panic!("schemas/events/{file} is for `{event_type}`, which the code no longer has");
        };
        assert!(
            version <= now,
            "schemas/events/{file} is newer than the v{now} the code writes"
        );
        if version < now {
            assert!(
                released.contains_key(&file),
                "{file} is an older version but not released"
            );
        }
    }
}

fn parse_file_name(file: &str) -> (String, u32) {
    let stem = file.strip_suffix(".json").unwrap_or(file);
    let (event_type, version) = stem
        .rsplit_once(".v")
        .unwrap_or_else(|| panic!("{file} is not named <aggregate>.<event>.v<N>.json"));
    let version = version
        .parse()
        .unwrap_or_else(|_| panic!("{file} is not named <aggregate>.<event>.v<N>.json"));
    (event_type.to_owned(), version)
}

/// The `type` tags an event enum's serde representation admits.
fn declared_event_types<E: JsonSchema>() -> BTreeSet<String> {
    let schema = schemars::SchemaGenerator::default()
        .into_root_schema_for::<E>()
        .to_value();
    schema["oneOf"]
        .as_array()
        .expect("an internally tagged enum is a oneOf")
        .iter()
        .map(|variant| {
            variant["properties"]["type"]["const"]
                .as_str()
                .expect("each variant has a const type tag")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_event_type_of_every_aggregate_has_a_schema_with_id_title_and_description() {
    let _files = files_lock();
    let mut declared = declared_event_types::<OrderEvent>();
    declared.extend(declared_event_types::<PaymentEvent>());
    declared.extend(declared_event_types::<CustomerEvent>());
    let schemas = event_schemas();
    let listed: BTreeSet<String> = schemas.iter().map(|s| s.event_type.to_owned()).collect();
    assert_eq!(
        listed, declared,
        "domain::schema::event_schemas misses or invents a type"
    );
    assert_eq!(listed.len(), schemas.len(), "an event type is listed twice");

    for schema in &schemas {
        let file = schema.file_name();
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(dir().join(&file)).unwrap()).unwrap();
        assert_eq!(
            on_disk["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        for key in ["$id", "title", "description"] {
            let text = on_disk[key].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{file} has no {key}");
        }
        assert_eq!(on_disk["properties"]["type"]["const"], schema.event_type);
        jsonschema::meta::validate(&on_disk)
            .unwrap_or_else(|e| panic!("{file} is not a valid JSON Schema: {e}"));
    }
}

// ---------------------------------------------------------------- validation

/// Validators of the checked-in files, by file name.
static VALIDATORS: LazyLock<BTreeMap<String, jsonschema::Validator>> = LazyLock::new(|| {
    files_on_disk()
        .into_iter()
        .map(|file| {
            let schema: Value =
                serde_json::from_slice(&std::fs::read(dir().join(&file)).unwrap()).unwrap();
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            (file, validator)
        })
        .collect()
});

fn validator(event_type: &str, version: u32) -> &'static jsonschema::Validator {
    let file = ordo_domain::schema::file_name(event_type, version);
    VALIDATORS
        .get(&file)
        .unwrap_or_else(|| panic!("no schemas/events/{file}: run `{BLESS}`"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// Checks one emitted event as stored and as a NATS body, and that the version it claims
/// is the one the catalog generates. Returns its type.
fn check<E: Serialize + EventName>(event: &E) -> Result<String, TestCaseError> {
    let current = event_schemas()
        .into_iter()
        .find(|s| s.event_type == event.name())
        .map(|s: EventSchema| s.version);
    prop_assert_eq!(
        current,
        Some(event.schema_version()),
        "{} is written at v{} but domain::schema::event_schemas lists {:?}",
        event.name(),
        event.schema_version(),
        current
    );
    let validator = validator(event.name(), event.schema_version());
    let stored = serde_json::to_value(event).unwrap();
    let mut body = stored.clone();
    body.as_object_mut().unwrap().remove("type");
    for instance in [&stored, &body] {
        let errors = errors(validator, instance);
        prop_assert!(errors.is_empty(), "{:?}\n{:#}", errors, instance);
    }
    Ok(event.name().to_owned())
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

fn text(raw: &str) -> Text {
    Text::parse(raw).unwrap()
}

/// One order with two lines, a payment for it, and a customer; `steps` picks what happens
/// to the order and the payment after that, in order. Every emitted event is checked;
/// returns the types seen.
fn run(steps: &[Step], with_address: bool) -> Result<BTreeSet<String>, TestCaseError> {
    let customer_id = Uuid::from_u128(2);
    let order_id = Uuid::from_u128(1);
    let eur = Currency::parse("EUR").unwrap();
    let mut seen = BTreeSet::new();

    let mut customer = Customer::default();
    let register = CustomerCommand::Register(RegisterCustomer {
        customer_id,
        email: Email::parse("Ada@Example.COM").unwrap(),
        name: text("Ada Lovelace"),
        phone: with_address.then(|| text("+44 20 7946 0000")),
        registered_at: at(0),
    });
    let note = CustomerCommand::AddNote {
        note_id: Uuid::from_u128(9),
        text: text("prefers\nmorning delivery"),
        at: at(1),
    };
    let erase = CustomerCommand::Erase { at: at(2) };
    for command in [register, note, erase] {
        for event in customer.decide(command).unwrap() {
            seen.insert(check(&event)?);
            customer.apply(event);
        }
    }

    let mut order = Order::default();
    let place = OrderCommand::Place(PlaceOrder {
        order_id,
        customer_id,
        currency: eur,
        lines: vec![
            NewLine {
                sku: Sku::parse("MUG-1").unwrap(),
                name: text("Mug"),
                quantity: Quantity::new(2).unwrap(),
                unit_price: Amount::new(1250).unwrap(),
            },
            NewLine {
                sku: Sku::parse("tee.blue_L").unwrap(),
                name: text("T-shirt"),
                quantity: Quantity::new(1).unwrap(),
                unit_price: Amount::new(0).unwrap(),
            },
        ],
        shipping_address: with_address.then(|| Address {
            line1: text("1 Main St"),
            line2: Some(text("Flat 2")),
            city: text("Berlin"),
            postal_code: text("10115"),
            country: CountryCode::parse("DE").unwrap(),
        }),
        placed_at: at(2),
    });
    for event in order.decide(place).unwrap() {
        seen.insert(check(&event)?);
        order.apply(event);
    }

    let mut payment = Payment::default();
    let create = PaymentCommand::Create(CreatePayment {
        payment_id: Uuid::from_u128(3),
        amount: Amount::new(2500).unwrap(),
        currency: eur,
        method: text("card"),
        order: OrderFacts {
            order_id,
            customer_id,
            currency: eur,
            status: order.status,
        },
        created_at: at(3),
    });
    for event in payment.decide(create).unwrap() {
        seen.insert(check(&event)?);
        payment.apply(event);
    }

    for (i, step) in steps.iter().enumerate() {
        let at = at(10 + i as i64);
        let decided = match step {
            Step::Order(make) => {
                let command = make(payment.coverage(), at);
                order.decide(command).map(|events| {
                    events
                        .into_iter()
                        .map(|e| {
                            let name = check(&e);
                            order.apply(e);
                            name
                        })
                        .collect::<Vec<_>>()
                })
            }
            Step::Payment(make) => payment.decide(make(at)).map(|events| {
                events
                    .into_iter()
                    .map(|e| {
                        let name = check(&e);
                        payment.apply(e);
                        name
                    })
                    .collect::<Vec<_>>()
            }),
        };
        // Refusals are part of the walk; only what was emitted is checked.
        for name in decided.into_iter().flatten() {
            seen.insert(name?);
        }
    }
    Ok(seen)
}

type OrderStep = fn(Amount, DateTime<Utc>) -> OrderCommand;
type PaymentStep = fn(DateTime<Utc>) -> PaymentCommand;

#[derive(Clone, Copy)]
enum Step {
    Order(OrderStep),
    Payment(PaymentStep),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Order(_) => f.write_str("Order(..)"),
            Step::Payment(_) => f.write_str("Payment(..)"),
        }
    }
}

fn confirm(_: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::Confirm { at }
}
fn cancel(_: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::Cancel {
        reason: text("changed my mind"),
        at,
    }
}
fn ship_mug(covered: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::Ship(ShipOrder {
        carrier: text("DHL"),
        tracking_number: text("JJD0001"),
        lines: Some(vec![ordo_domain::order::ShipmentLine {
            sku: Sku::parse("MUG-1").unwrap(),
            quantity: Quantity::new(1).unwrap(),
        }]),
        covered,
        at,
    })
}
fn ship_rest(covered: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::Ship(ShipOrder {
        carrier: text("DHL"),
        tracking_number: text("JJD0002"),
        lines: None,
        covered,
        at,
    })
}
fn deliver(_: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::Deliver { at }
}
fn record_paid(_: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::RecordPaymentStatus {
        status: OrderPaymentStatus::Paid,
        at,
    }
}
fn record_partially_refunded(_: Amount, at: DateTime<Utc>) -> OrderCommand {
    OrderCommand::RecordPaymentStatus {
        status: OrderPaymentStatus::PartiallyRefunded,
        at,
    }
}
fn authorize(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Authorize {
        provider_reference: text("psp_123"),
        amount: None,
        at,
    }
}
fn capture_some(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Capture {
        amount: Amount::new(1000).unwrap(),
        at,
    }
}
fn capture_rest(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Capture {
        amount: Amount::new(1500).unwrap(),
        at,
    }
}
fn refund(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Refund {
        amount: Amount::new(1000).unwrap(),
        reason: text("damaged"),
        at,
    }
}
fn void(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Void { at }
}
fn fail(at: DateTime<Utc>) -> PaymentCommand {
    PaymentCommand::Fail {
        reason: text("card declined"),
        at,
    }
}

const ORDER_STEPS: [OrderStep; 7] = [
    confirm,
    cancel,
    ship_mug,
    ship_rest,
    deliver,
    record_paid,
    record_partially_refunded,
];
const PAYMENT_STEPS: [PaymentStep; 6] = [authorize, capture_some, capture_rest, refund, void, fail];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::sample::select(ORDER_STEPS.to_vec()).prop_map(Step::Order),
        prop::sample::select(PAYMENT_STEPS.to_vec()).prop_map(Step::Payment),
    ]
}

#[test]
fn every_event_type_is_emitted_by_some_scenario_and_matches_its_schema() {
    let _files = files_lock();
    let delivered = [
        Step::Order(confirm),
        Step::Payment(authorize),
        Step::Payment(capture_some),
        Step::Order(ship_mug),
        Step::Payment(capture_rest),
        Step::Order(ship_rest),
        Step::Order(record_paid),
        Step::Order(deliver),
        Step::Payment(refund),
        Step::Order(record_partially_refunded),
    ];
    let failed = [Step::Payment(fail), Step::Order(cancel)];
    let voided = [Step::Payment(authorize), Step::Payment(void)];
    let mut seen = BTreeSet::new();
    for (steps, with_address) in [(&delivered[..], true), (&failed, false), (&voided, true)] {
        seen.extend(run(steps, with_address).unwrap());
    }
    let all: BTreeSet<String> = event_schemas()
        .iter()
        .map(|s| s.event_type.to_owned())
        .collect();
    assert_eq!(seen, all, "the scenarios must emit every event type");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_event_of_a_random_walk_matches_its_schema(
        steps in prop::collection::vec(step(), 0..16),
        with_address in any::<bool>(),
    ) {
        let _files = files_lock();
        run(&steps, with_address)?;
    }
}

// ---------------------------------------------------------------- the validator bites

fn valid_placed() -> Value {
    json!({
        "type": "order.placed",
        "order_id": "018f0000-0000-7000-8000-000000000001",
        "customer_id": "018f0000-0000-7000-8000-000000000002",
        "currency": "EUR",
        "lines": [{
            "sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": 1250, "line_total": 2500
        }],
        "total": 2500,
        "shipping_address": null,
        "placed_at": "2026-01-01T00:00:00Z"
    })
}

#[test]
fn invalid_payloads_fail_validation() {
    let _files = files_lock();
    let validator = validator("order.placed", 1);
    let valid = valid_placed();
    assert_eq!(errors(validator, &valid), Vec::<String>::new());

    type Breakage = (&'static str, fn(&mut Value));
    let broken: [Breakage; 11] = [
        ("negative amount", |v| v["total"] = json!(-1)),
        ("fractional amount", |v| v["total"] = json!(12.5)),
        ("missing field", |v| {
            v.as_object_mut().unwrap().remove("customer_id");
        }),
        ("unknown field", |v| v["discount"] = json!(10)),
        ("lower-case currency", |v| v["currency"] = json!("eur")),
        ("zero quantity", |v| v["lines"][0]["quantity"] = json!(0)),
        ("blank line name", |v| v["lines"][0]["name"] = json!("  ")),
        ("sku with a space", |v| {
            v["lines"][0]["sku"] = json!("MUG 1")
        }),
        ("not a uuid", |v| v["order_id"] = json!("order-1")),
        ("not a date-time", |v| v["placed_at"] = json!("yesterday")),
        ("another type tag", |v| v["type"] = json!("order.confirmed")),
    ];
    for (what, break_it) in broken {
        let mut instance = valid.clone();
        break_it(&mut instance);
        assert!(
            !errors(validator, &instance).is_empty(),
            "a payload with a {what} passed validation: {instance:#}"
        );
    }
}
