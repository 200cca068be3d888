//! Customer: given events → when a command → then events or an error.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::values::{Email, Text};
use crate::DomainError;

const CUSTOMER: Uuid = Uuid::from_u128(2);
const NOTE: Uuid = Uuid::from_u128(20);
const OTHER_NOTE: Uuid = Uuid::from_u128(21);

/// Minutes after the fixed start, 2026-01-01T00:00:00Z.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

fn text(raw: &str) -> Text {
    Text::parse(raw).unwrap()
}

fn email() -> Email {
    Email::parse("ada@example.com").unwrap()
}

fn register(phone: Option<&str>) -> CustomerCommand {
    CustomerCommand::Register(RegisterCustomer {
        customer_id: CUSTOMER,
        email: email(),
        name: text("Ada Lovelace"),
        phone: phone.map(text),
        registered_at: at(0),
    })
}

fn add_note(note_id: Uuid, body: &str, minutes: i64) -> CustomerCommand {
    CustomerCommand::AddNote {
        note_id,
        text: text(body),
        at: at(minutes),
    }
}

fn registered(phone: Option<&str>) -> CustomerEvent {
    CustomerEvent::Registered(CustomerRegistered {
        customer_id: CUSTOMER,
        email: email().into(),
        name: text("Ada Lovelace").into(),
        phone: phone.map(|p| text(p).into()),
        registered_at: at(0),
    })
}

fn note_added(note_id: Uuid, body: &str, minutes: i64) -> CustomerEvent {
    CustomerEvent::NoteAdded(CustomerNoteAdded {
        customer_id: CUSTOMER,
        note_id,
        text: text(body).into(),
        added_at: at(minutes),
    })
}

/// The state folded from `events`, in order.
fn given(events: Vec<CustomerEvent>) -> Customer {
    let mut customer = Customer::default();
    for event in events {
        customer.apply(event);
    }
    customer
}

#[test]
fn registering_a_new_customer_records_their_details() {
    let events = given(vec![]).decide(register(Some("+44 20 0000"))).unwrap();
    assert_eq!(events, vec![registered(Some("+44 20 0000"))]);

    let customer = given(events);
    assert!(customer.exists());
    assert_eq!(customer.id, Some(CUSTOMER));
    assert_eq!(customer.email, Some(email().into()));
    assert_eq!(customer.name, Some(text("Ada Lovelace").into()));
    assert_eq!(customer.phone, Some(text("+44 20 0000").into()));
    assert_eq!(customer.registered_at, Some(at(0)));
    assert!(customer.notes.is_empty());
}

#[test]
fn a_customer_may_register_without_a_phone() {
    let events = given(vec![]).decide(register(None)).unwrap();
    assert_eq!(events, vec![registered(None)]);
    assert_eq!(given(events).phone, None);
}

#[test]
fn a_customer_that_never_registered_does_not_exist() {
    assert!(!given(vec![]).exists());
}

#[test]
fn registering_a_customer_twice_is_refused_as_already_existing() {
    let result = given(vec![registered(None)]).decide(register(None));
    assert_eq!(
        result,
        Err(DomainError::AlreadyExists {
            aggregate: "customer"
        })
    );
}

#[test]
fn adding_a_note_to_a_customer_records_it() {
    let events = given(vec![registered(None)])
        .decide(add_note(NOTE, "called about delivery", 5))
        .unwrap();
    assert_eq!(events, vec![note_added(NOTE, "called about delivery", 5)]);

    let customer = given(vec![registered(None), events[0].clone()]);
    assert_eq!(
        customer.notes,
        vec![Note {
            id: NOTE,
            text: text("called about delivery").into(),
            added_at: at(5),
        }]
    );
}

#[test]
fn notes_are_kept_in_the_order_they_were_added() {
    let customer = given(vec![
        registered(None),
        note_added(NOTE, "first", 5),
        note_added(OTHER_NOTE, "second", 6),
    ]);
    let ids: Vec<Uuid> = customer.notes.iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![NOTE, OTHER_NOTE]);
    assert_eq!(customer.notes[1].text, text("second").into());
}

#[test]
fn a_second_note_with_another_id_is_added() {
    let events = given(vec![registered(None), note_added(NOTE, "first", 5)])
        .decide(add_note(OTHER_NOTE, "second", 6))
        .unwrap();
    assert_eq!(events, vec![note_added(OTHER_NOTE, "second", 6)]);
}

#[test]
fn adding_a_note_to_an_unknown_customer_is_not_found() {
    let result = given(vec![]).decide(add_note(NOTE, "hello", 5));
    assert_eq!(
        result,
        Err(DomainError::NotFound {
            aggregate: "customer"
        })
    );
}

#[test]
fn adding_the_same_note_id_twice_is_refused() {
    let result = given(vec![registered(None), note_added(NOTE, "first", 5)]).decide(add_note(
        NOTE,
        "first again",
        6,
    ));
    assert!(
        matches!(
            &result,
            Err(DomainError::Refused {
                rule: "note-already-added",
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn a_note_beyond_the_largest_number_of_notes_is_refused() {
    let mut history = vec![registered(None)];
    history.extend((0..MAX_NOTES).map(|i| note_added(Uuid::from_u128(i as u128 + 1), "n", 5)));
    let result = given(history.clone()).decide(add_note(Uuid::new_v4(), "one more", 6));
    assert!(
        matches!(
            &result,
            Err(DomainError::Refused {
                rule: "too-many-notes",
                ..
            })
        ),
        "{result:?}"
    );
    history.pop();
    assert!(given(history)
        .decide(add_note(Uuid::new_v4(), "the last one", 6))
        .is_ok());
}

#[test]
fn every_customer_event_round_trips_through_json_under_its_dotted_type() {
    let events = [
        (registered(Some("+44 20 0000")), "customer.registered"),
        (
            note_added(NOTE, "called about delivery", 5),
            "customer.note_added",
        ),
    ];
    for (event, type_name) in events {
        assert_eq!(event.name(), type_name);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], type_name, "{json}");
        assert_eq!(json["customer_id"], CUSTOMER.to_string(), "{json}");
        let back: CustomerEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn a_customer_event_with_a_bad_email_does_not_deserialize() {
    let mut json = serde_json::to_value(registered(None)).unwrap();
    json["email"] = serde_json::json!("not an email");
    assert!(serde_json::from_value::<CustomerEvent>(json).is_err());
}

#[test]
fn the_cqrs_adapter_names_events_and_runs_decide() {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    assert_eq!(
        DomainEvent::event_type(&note_added(NOTE, "x", 1)),
        "customer.note_added"
    );
    assert_eq!(DomainEvent::event_version(&registered(None)), "2");

    TestFramework::<Customer>::with(())
        .given(vec![registered(None)])
        .when(add_note(NOTE, "hello", 5))
        .then_expect_events(vec![note_added(NOTE, "hello", 5)]);
    TestFramework::<Customer>::with(())
        .given(vec![registered(None), note_added(NOTE, "hello", 5)])
        .when(add_note(NOTE, "hello", 6))
        .then_expect_error(DomainError::refused(
            "note-already-added",
            "a note with this id is already on the customer",
        ));
}

fn erased(minutes: i64) -> CustomerEvent {
    CustomerEvent::Erased(crate::customer::CustomerErased {
        customer_id: CUSTOMER,
        erased_at: at(minutes),
    })
}

#[test]
fn erasing_a_customer_records_it_without_personal_data() {
    let events = given(vec![registered(Some("+44 20 0000"))])
        .decide(CustomerCommand::Erase { at: at(9) })
        .unwrap();
    assert_eq!(events, vec![erased(9)]);
    let customer = given(vec![registered(None), events[0].clone()]);
    assert_eq!(customer.erased_at, Some(at(9)));
}

#[test]
fn an_erased_customer_is_not_erased_again_and_takes_no_notes() {
    let customer = given(vec![registered(None), erased(9)]);
    let again = customer.decide(CustomerCommand::Erase { at: at(10) });
    assert!(matches!(
        again,
        Err(DomainError::Refused {
            rule: "customer-erased",
            ..
        })
    ));
    let note = customer.decide(add_note(NOTE, "hello", 11));
    assert!(matches!(
        note,
        Err(DomainError::Refused {
            rule: "customer-erased",
            ..
        })
    ));
}

#[test]
fn a_customer_that_never_registered_cannot_be_erased() {
    let result = given(vec![]).decide(CustomerCommand::Erase { at: at(1) });
    assert_eq!(
        result,
        Err(DomainError::NotFound {
            aggregate: "customer"
        })
    );
}
