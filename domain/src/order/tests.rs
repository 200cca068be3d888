//! Order: given events → when a command → then events or an error.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::values::{Address, CountryCode, Quantity, Sku, Text};
use crate::{Amount, Currency, DomainError};

// ---------------------------------------------------------------- fixtures

const ORDER: Uuid = Uuid::from_u128(1);
const CUSTOMER: Uuid = Uuid::from_u128(2);

/// Minutes after the fixed start, 2026-01-01T00:00:00Z.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).unwrap()
}

fn text(raw: &str) -> Text {
    Text::parse(raw).unwrap()
}

fn amount(minor: i64) -> Amount {
    Amount::new(minor).unwrap()
}

fn qty(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}

fn address() -> Address {
    Address {
        line1: text("1 Analytical Street"),
        line2: None,
        city: text("London"),
        postal_code: text("N1 1AA"),
        country: CountryCode::parse("GB").unwrap(),
    }
}

fn new_line(code: &str, quantity: i64, unit_price: i64) -> NewLine {
    NewLine {
        sku: sku(code),
        name: text(&format!("item {code}")),
        quantity: qty(quantity),
        unit_price: amount(unit_price),
    }
}

fn place(lines: Vec<NewLine>) -> OrderCommand {
    OrderCommand::Place(PlaceOrder {
        order_id: ORDER,
        customer_id: CUSTOMER,
        currency: eur(),
        lines,
        shipping_address: Some(address()),
        placed_at: at(0),
    })
}

/// The standard order: 2 × MUG at 12.50 and 1 × TEE at 19.99, total 44.99.
fn standard_lines() -> Vec<NewLine> {
    vec![new_line("MUG", 2, 1250), new_line("TEE", 1, 1999)]
}

const TOTAL: i64 = 2 * 1250 + 1999;

fn placed() -> OrderEvent {
    OrderEvent::Placed(OrderPlaced {
        order_id: ORDER,
        customer_id: CUSTOMER,
        currency: eur(),
        lines: vec![
            PlacedLine {
                sku: sku("MUG"),
                name: text("item MUG"),
                quantity: qty(2),
                unit_price: amount(1250),
                line_total: amount(2500),
            },
            PlacedLine {
                sku: sku("TEE"),
                name: text("item TEE"),
                quantity: qty(1),
                unit_price: amount(1999),
                line_total: amount(1999),
            },
        ],
        total: amount(TOTAL),
        shipping_address: Some(address().into()),
        placed_at: at(0),
    })
}

fn confirmed() -> OrderEvent {
    OrderEvent::Confirmed(OrderConfirmed {
        order_id: ORDER,
        customer_id: CUSTOMER,
        confirmed_at: at(1),
    })
}

fn cancelled() -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled {
        order_id: ORDER,
        customer_id: CUSTOMER,
        currency: eur(),
        total: amount(TOTAL),
        reason: text("changed my mind"),
        cancelled_at: at(2),
    })
}

fn shipment_lines(lines: &[(&str, i64)]) -> Vec<ShipmentLine> {
    lines
        .iter()
        .map(|(code, n)| ShipmentLine {
            sku: sku(code),
            quantity: qty(*n),
        })
        .collect()
}

fn shipped(number: u32, lines: &[(&str, i64)], fully_shipped: bool) -> OrderEvent {
    OrderEvent::Shipped(OrderShipped {
        order_id: ORDER,
        customer_id: CUSTOMER,
        shipment_number: number,
        carrier: text("DHL"),
        tracking_number: text(&format!("JD000{number}")),
        lines: shipment_lines(lines),
        fully_shipped,
        shipped_at: at(10 + i64::from(number)),
    })
}

fn delivered() -> OrderEvent {
    OrderEvent::Delivered(OrderDelivered {
        order_id: ORDER,
        customer_id: CUSTOMER,
        delivered_at: at(30),
    })
}

/// Shipment number `number` of the given lines (`None`: everything left), with payments
/// covering `covered`.
fn ship(number: u32, lines: Option<&[(&str, i64)]>, covered: i64) -> OrderCommand {
    OrderCommand::Ship(ShipOrder {
        carrier: text("DHL"),
        tracking_number: text(&format!("JD000{number}")),
        lines: lines.map(shipment_lines),
        covered: amount(covered),
        at: at(10 + i64::from(number)),
    })
}

fn confirm() -> OrderCommand {
    OrderCommand::Confirm { at: at(1) }
}

fn cancel() -> OrderCommand {
    OrderCommand::Cancel {
        reason: text("changed my mind"),
        at: at(2),
    }
}

fn deliver() -> OrderCommand {
    OrderCommand::Deliver { at: at(30) }
}

/// The state folded from `events`, in order.
fn given(events: Vec<OrderEvent>) -> Order {
    let mut order = Order::default();
    for event in events {
        order.apply(event);
    }
    order
}

#[track_caller]
fn assert_refused(result: Result<Vec<OrderEvent>, DomainError>, expected: &str) {
    assert!(
        matches!(&result, Err(DomainError::Refused { rule, .. }) if *rule == expected),
        "expected a refusal by rule {expected}, got {result:?}"
    );
}

#[track_caller]
fn assert_invalid(result: Result<Vec<OrderEvent>, DomainError>, expected_field: &str) {
    assert!(
        matches!(&result, Err(DomainError::Invalid { field, .. }) if field == expected_field),
        "expected Invalid on field {expected_field}, got {result:?}"
    );
}

#[track_caller]
fn assert_not_found(result: Result<Vec<OrderEvent>, DomainError>) {
    assert_eq!(result, Err(DomainError::NotFound { aggregate: "order" }));
}

// ---------------------------------------------------------------- place

#[test]
fn placing_an_order_computes_line_totals_and_the_total_on_the_server() {
    let events = given(vec![]).decide(place(standard_lines())).unwrap();
    assert_eq!(events, vec![placed()]);
}

#[test]
fn a_placed_order_folds_into_a_placed_state_with_nothing_shipped() {
    let order = given(vec![placed()]);
    assert!(order.exists());
    assert_eq!(order.id, Some(ORDER));
    assert_eq!(order.customer_id, Some(CUSTOMER));
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!(order.currency, Some(eur()));
    assert_eq!(order.total, amount(TOTAL));
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.lines[0].line_total, amount(2500));
    assert!(order.lines.iter().all(|l| l.shipped == 0));
    assert_eq!(order.shipping_address, Some(address().into()));
    assert_eq!(order.shipments, 0);
    assert_eq!(order.placed_at, Some(at(0)));
    assert_eq!(order.updated_at, Some(at(0)));
}

#[test]
fn an_order_that_was_never_placed_does_not_exist() {
    let order = given(vec![]);
    assert!(!order.exists());
    assert_eq!(order.status, OrderStatus::None);
}

#[test]
fn a_line_with_a_zero_unit_price_is_free_and_accepted() {
    let events = given(vec![])
        .decide(place(vec![
            new_line("GIFT", 3, 0),
            new_line("MUG", 1, 1250),
        ]))
        .unwrap();
    let [OrderEvent::Placed(e)] = events.as_slice() else {
        panic!("expected one order.placed, got {events:?}");
    };
    assert_eq!(e.lines[0].line_total, Amount::ZERO);
    assert_eq!(e.total, amount(1250));
}

#[test]
fn placing_an_order_without_lines_is_invalid() {
    assert_invalid(given(vec![]).decide(place(vec![])), "lines");
}

#[test]
fn placing_an_order_with_more_than_the_maximum_number_of_lines_is_invalid() {
    let lines = |n: usize| {
        (0..n)
            .map(|i| new_line(&format!("SKU-{i}"), 1, 100))
            .collect::<Vec<_>>()
    };
    assert_invalid(given(vec![]).decide(place(lines(MAX_LINES + 1))), "lines");
    let events = given(vec![]).decide(place(lines(MAX_LINES))).unwrap();
    assert!(
        matches!(events.as_slice(), [OrderEvent::Placed(e)] if e.lines.len() == MAX_LINES && e.total == amount(100 * MAX_LINES as i64))
    );
}

#[test]
fn placing_an_order_with_the_same_sku_on_two_lines_is_invalid() {
    let lines = vec![
        new_line("MUG", 1, 1250),
        new_line("TEE", 1, 1999),
        new_line("MUG", 1, 1250),
    ];
    assert_invalid(given(vec![]).decide(place(lines)), "lines[2].sku");
}

#[test]
fn a_line_whose_unit_price_times_quantity_passes_the_largest_amount_is_invalid() {
    let lines = vec![
        new_line("MUG", 1, 1250),
        new_line("GOLD", 2, Amount::MAX.get()),
    ];
    assert_invalid(given(vec![]).decide(place(lines)), "lines[1]");
}

#[test]
fn an_order_whose_line_totals_sum_beyond_the_largest_amount_is_invalid() {
    let half = Amount::MAX.get() / 2 + 1;
    let lines = vec![new_line("A", 1, half), new_line("B", 1, half)];
    assert_invalid(given(vec![]).decide(place(lines)), "lines");
}

#[test]
fn an_order_totalling_exactly_the_largest_amount_is_accepted() {
    let lines = vec![
        new_line("A", 1, Amount::MAX.get() / 2),
        new_line("B", 1, Amount::MAX.get() / 2),
    ];
    let events = given(vec![]).decide(place(lines)).unwrap();
    assert!(matches!(events.as_slice(), [OrderEvent::Placed(e)] if e.total == Amount::MAX));
}

#[test]
fn placing_an_order_twice_is_refused_as_already_existing() {
    let result = given(vec![placed()]).decide(place(standard_lines()));
    assert_eq!(
        result,
        Err(DomainError::AlreadyExists { aggregate: "order" })
    );
}

#[test]
fn placing_over_a_cancelled_order_is_refused_as_already_existing() {
    let result = given(vec![placed(), cancelled()]).decide(place(standard_lines()));
    assert_eq!(
        result,
        Err(DomainError::AlreadyExists { aggregate: "order" })
    );
}

// ---------------------------------------------------------------- confirm

#[test]
fn confirming_a_placed_order_confirms_it() {
    let order = given(vec![placed()]);
    let events = order.decide(confirm()).unwrap();
    assert_eq!(events, vec![confirmed()]);

    let order = given(vec![placed(), confirmed()]);
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.updated_at, Some(at(1)));
    assert_eq!(order.placed_at, Some(at(0)));
}

#[test]
fn confirming_an_order_twice_is_refused() {
    let result = given(vec![placed(), confirmed()]).decide(confirm());
    assert_refused(result, "order-already-confirmed");
}

#[test]
fn confirming_an_unknown_order_is_not_found() {
    assert_not_found(given(vec![]).decide(confirm()));
}

#[test]
fn confirming_a_cancelled_order_is_refused() {
    let result = given(vec![placed(), cancelled()]).decide(confirm());
    assert_refused(result, "order-cancelled");
}

#[test]
fn confirming_a_shipped_order_is_refused() {
    let result = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ])
    .decide(confirm());
    assert_refused(result, "order-already-shipped");
}

#[test]
fn confirming_a_delivered_order_is_refused() {
    let history = vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
        delivered(),
    ];
    assert_refused(given(history).decide(confirm()), "order-delivered");
}

// ---------------------------------------------------------------- cancel

#[test]
fn cancelling_a_placed_order_carries_its_customer_currency_and_total() {
    let events = given(vec![placed()]).decide(cancel()).unwrap();
    assert_eq!(events, vec![cancelled()]);

    let order = given(vec![placed(), cancelled()]);
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(order.cancellation_reason, Some(text("changed my mind")));
    assert_eq!(order.updated_at, Some(at(2)));
}

#[test]
fn cancelling_a_confirmed_order_cancels_it() {
    let events = given(vec![placed(), confirmed()]).decide(cancel()).unwrap();
    assert_eq!(events, vec![cancelled()]);
}

#[test]
fn cancelling_a_partially_shipped_order_is_refused() {
    let result = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ])
    .decide(cancel());
    assert_refused(result, "order-already-shipped");
}

#[test]
fn cancelling_a_fully_shipped_order_is_refused() {
    let result = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
    ])
    .decide(cancel());
    assert_refused(result, "order-already-shipped");
}

#[test]
fn cancelling_an_order_twice_is_refused() {
    let result = given(vec![placed(), cancelled()]).decide(cancel());
    assert_refused(result, "order-cancelled");
}

#[test]
fn cancelling_a_delivered_order_is_refused() {
    let history = vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
        delivered(),
    ];
    assert_refused(given(history).decide(cancel()), "order-delivered");
}

#[test]
fn cancelling_an_unknown_order_is_not_found() {
    assert_not_found(given(vec![]).decide(cancel()));
}

// ---------------------------------------------------------------- ship

#[test]
fn shipping_a_placed_order_is_refused_even_when_paid() {
    let result = given(vec![placed()]).decide(ship(1, None, TOTAL));
    assert_refused(result, "order-not-confirmed");
}

#[test]
fn shipping_an_order_its_payments_do_not_cover_is_refused() {
    let order = given(vec![placed(), confirmed()]);
    assert_refused(order.decide(ship(1, None, 0)), "order-not-paid");
    assert_refused(order.decide(ship(1, None, TOTAL - 1)), "order-not-paid");
}

#[test]
fn shipping_an_order_whose_payments_cover_exactly_the_total_ships_everything() {
    let events = given(vec![placed(), confirmed()])
        .decide(ship(1, None, TOTAL))
        .unwrap();
    assert_eq!(events, vec![shipped(1, &[("MUG", 2), ("TEE", 1)], true)]);
}

#[test]
fn shipping_an_order_whose_payments_cover_more_than_the_total_is_allowed() {
    let events = given(vec![placed(), confirmed()])
        .decide(ship(1, None, TOTAL + 1))
        .unwrap();
    assert_eq!(events, vec![shipped(1, &[("MUG", 2), ("TEE", 1)], true)]);
}

#[test]
fn a_full_shipment_folds_into_a_shipped_order() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
    ]);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.shipments, 1);
    assert_eq!(order.lines[0].shipped, 2);
    assert_eq!(order.lines[1].shipped, 1);
    assert_eq!(order.updated_at, Some(at(11)));
}

#[test]
fn shipping_some_lines_is_a_partial_shipment() {
    let events = given(vec![placed(), confirmed()])
        .decide(ship(1, Some(&[("MUG", 1)]), TOTAL))
        .unwrap();
    assert_eq!(events, vec![shipped(1, &[("MUG", 1)], false)]);

    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ]);
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(order.shipments, 1);
    assert_eq!(order.lines[0].shipped, 1);
    assert_eq!(order.lines[1].shipped, 0);
}

#[test]
fn shipping_every_line_in_full_by_name_is_a_full_shipment() {
    let events = given(vec![placed(), confirmed()])
        .decide(ship(1, Some(&[("TEE", 1), ("MUG", 2)]), TOTAL))
        .unwrap();
    assert_eq!(events, vec![shipped(1, &[("TEE", 1), ("MUG", 2)], true)]);
}

#[test]
fn shipping_the_rest_after_a_partial_shipment_completes_the_order_with_the_next_number() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ]);
    let events = order
        .decide(ship(2, Some(&[("MUG", 1), ("TEE", 1)]), TOTAL))
        .unwrap();
    assert_eq!(events, vec![shipped(2, &[("MUG", 1), ("TEE", 1)], true)]);
}

#[test]
fn shipment_numbers_count_up_one_per_shipment() {
    let mut history = vec![placed(), confirmed()];
    for (number, line) in [(1, ("MUG", 1)), (2, ("TEE", 1)), (3, ("MUG", 1))] {
        let events = given(history.clone())
            .decide(ship(number, Some(&[line]), TOTAL))
            .unwrap();
        let [OrderEvent::Shipped(e)] = events.as_slice() else {
            panic!("expected one order.shipped, got {events:?}");
        };
        assert_eq!(e.shipment_number, number);
        assert_eq!(e.fully_shipped, number == 3);
        history.extend(events);
    }
    assert_eq!(given(history).shipments, 3);
}

#[test]
fn shipping_without_lines_after_a_partial_shipment_ships_only_what_remains() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ]);
    let events = order.decide(ship(2, None, TOTAL)).unwrap();
    assert_eq!(events, vec![shipped(2, &[("MUG", 1), ("TEE", 1)], true)]);
}

#[test]
fn every_shipment_needs_the_payments_to_cover_the_total() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ]);
    assert_refused(order.decide(ship(2, None, TOTAL - 1)), "order-not-paid");
}

#[test]
fn a_shipment_naming_no_lines_is_invalid() {
    let result = given(vec![placed(), confirmed()]).decide(ship(1, Some(&[]), TOTAL));
    assert_invalid(result, "lines");
}

#[test]
fn shipping_a_sku_that_is_not_on_the_order_is_invalid() {
    let result =
        given(vec![placed(), confirmed()]).decide(ship(1, Some(&[("MUG", 1), ("HAT", 1)]), TOTAL));
    assert_invalid(result, "lines[1].sku");
}

#[test]
fn naming_the_same_sku_twice_in_one_shipment_is_invalid() {
    let result = given(vec![placed(), confirmed()]).decide(ship(
        1,
        Some(&[("MUG", 1), ("TEE", 1), ("MUG", 1)]),
        TOTAL,
    ));
    assert_invalid(result, "lines[2].sku");
}

#[test]
fn shipping_more_than_was_ordered_is_refused() {
    let result = given(vec![placed(), confirmed()]).decide(ship(1, Some(&[("MUG", 3)]), TOTAL));
    assert_refused(result, "shipment-exceeds-ordered");
}

#[test]
fn shipping_more_than_remains_after_a_partial_shipment_is_refused() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
    ]);
    assert_refused(
        order.decide(ship(2, Some(&[("MUG", 2)]), TOTAL)),
        "shipment-exceeds-ordered",
    );
    assert!(order.decide(ship(2, Some(&[("MUG", 1)]), TOTAL)).is_ok());
}

#[test]
fn shipping_a_fully_shipped_order_again_is_refused() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 1)], false),
        shipped(2, &[("MUG", 1), ("TEE", 1)], true),
    ]);
    assert_refused(order.decide(ship(3, None, TOTAL)), "order-already-shipped");
    assert_refused(
        order.decide(ship(3, Some(&[("MUG", 1)]), TOTAL)),
        "order-already-shipped",
    );
}

#[test]
fn shipping_a_cancelled_order_is_refused() {
    let result = given(vec![placed(), confirmed(), cancelled()]).decide(ship(1, None, TOTAL));
    assert_refused(result, "order-cancelled");
}

#[test]
fn shipping_a_delivered_order_is_refused() {
    let history = vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
        delivered(),
    ];
    assert_refused(
        given(history).decide(ship(2, None, TOTAL)),
        "order-delivered",
    );
}

#[test]
fn shipping_an_unknown_order_is_not_found() {
    assert_not_found(given(vec![]).decide(ship(1, None, TOTAL)));
}

// ---------------------------------------------------------------- deliver

#[test]
fn delivering_a_fully_shipped_order_delivers_it() {
    let history = vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
    ];
    let events = given(history.clone()).decide(deliver()).unwrap();
    assert_eq!(events, vec![delivered()]);

    let mut history = history;
    history.extend(events);
    let order = given(history);
    assert_eq!(order.status, OrderStatus::Delivered);
    assert_eq!(order.updated_at, Some(at(30)));
}

#[test]
fn delivering_an_order_shipped_in_several_parts_delivers_it_once_all_shipped() {
    let order = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("TEE", 1)], false),
        shipped(2, &[("MUG", 2)], true),
    ]);
    assert_eq!(order.decide(deliver()).unwrap(), vec![delivered()]);
}

#[test]
fn delivering_a_partially_shipped_order_is_refused() {
    let result = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2)], false),
    ])
    .decide(deliver());
    assert_refused(result, "order-not-fully-shipped");
}

#[test]
fn delivering_a_confirmed_order_is_refused() {
    let result = given(vec![placed(), confirmed()]).decide(deliver());
    assert_refused(result, "order-not-shipped");
}

#[test]
fn delivering_a_placed_order_is_refused() {
    assert_refused(given(vec![placed()]).decide(deliver()), "order-not-shipped");
}

#[test]
fn delivering_an_order_twice_is_refused() {
    let history = vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
        delivered(),
    ];
    assert_refused(given(history).decide(deliver()), "order-delivered");
}

#[test]
fn delivering_a_cancelled_order_is_refused() {
    let result = given(vec![placed(), cancelled()]).decide(deliver());
    assert_refused(result, "order-cancelled");
}

#[test]
fn delivering_an_unknown_order_is_not_found() {
    assert_not_found(given(vec![]).decide(deliver()));
}

// ---------------------------------------------------------------- fulfillment

#[test]
fn fulfillment_status_follows_the_lifecycle() {
    use FulfillmentStatus::*;
    let steps = [
        (placed(), Unfulfilled),
        (confirmed(), Unfulfilled),
        (shipped(1, &[("MUG", 1)], false), PartiallyShipped),
        (shipped(2, &[("TEE", 1)], false), PartiallyShipped),
        (shipped(3, &[("MUG", 1)], true), Shipped),
        (delivered(), Delivered),
    ];
    let mut order = Order::default();
    assert_eq!(order.fulfillment_status(), Unfulfilled);
    for (event, expected) in steps {
        let name = event.name();
        order.apply(event);
        assert_eq!(order.fulfillment_status(), expected, "after {name}");
    }
}

#[test]
fn a_cancelled_order_stays_unfulfilled() {
    let order = given(vec![placed(), confirmed(), cancelled()]);
    assert_eq!(order.fulfillment_status(), FulfillmentStatus::Unfulfilled);
}

#[test]
fn state_folded_from_decided_events_walks_the_whole_lifecycle() {
    let commands = [
        place(standard_lines()),
        confirm(),
        ship(1, Some(&[("MUG", 1)]), TOTAL),
        ship(2, None, TOTAL),
        deliver(),
    ];
    let expected = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ];
    let mut order = Order::default();
    for (command, status) in commands.into_iter().zip(expected) {
        let events = order.decide(command).unwrap();
        assert_eq!(events.len(), 1);
        for event in events {
            order.apply(event);
        }
        assert_eq!(order.status, status);
    }
    assert_eq!(order.shipments, 2);
    assert!(order.lines.iter().all(|l| l.shipped == l.quantity.get()));
}

// ---------------------------------------------------------------- events

#[test]
fn every_order_event_round_trips_through_json_under_its_dotted_type() {
    let events = [
        (placed(), "order.placed"),
        (confirmed(), "order.confirmed"),
        (cancelled(), "order.cancelled"),
        (shipped(1, &[("MUG", 1)], false), "order.shipped"),
        (delivered(), "order.delivered"),
    ];
    for (event, type_name) in events {
        assert_eq!(event.name(), type_name);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], type_name, "{json}");
        assert_eq!(json["order_id"], ORDER.to_string(), "{json}");
        let back: OrderEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn order_placed_json_carries_amounts_as_integers_in_minor_units() {
    let json = serde_json::to_value(placed()).unwrap();
    assert_eq!(json["total"], TOTAL);
    assert_eq!(json["currency"], "EUR");
    assert_eq!(json["lines"][0]["unit_price"], 1250);
    assert_eq!(json["lines"][0]["quantity"], 2);
    assert_eq!(json["lines"][0]["line_total"], 2500);
}

#[test]
fn an_order_event_with_an_invalid_value_does_not_deserialize() {
    let mut json = serde_json::to_value(placed()).unwrap();
    json["lines"][0]["quantity"] = serde_json::json!(0);
    assert!(serde_json::from_value::<OrderEvent>(json).is_err());
}

#[test]
fn the_cqrs_adapter_names_events_and_runs_decide() {
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;

    let event = placed();
    assert_eq!(DomainEvent::event_type(&event), "order.placed");
    assert_eq!(DomainEvent::event_version(&event), "2");

    TestFramework::<Order>::with(())
        .given(vec![placed(), confirmed()])
        .when(ship(1, None, TOTAL))
        .then_expect_events(vec![shipped(1, &[("MUG", 2), ("TEE", 1)], true)]);
    TestFramework::<Order>::with(())
        .given(vec![placed()])
        .when(ship(1, None, TOTAL))
        .then_expect_error(DomainError::refused(
            "order-not-confirmed",
            "only a confirmed order can ship",
        ));
}

// ---------------------------------------------------------------- properties

/// Unit prices from every magnitude, so that small orders, line overflows and sum
/// overflows all turn up.
fn unit_price() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..100_000,
        0i64..=Amount::MAX.get() / 1_000_000,
        0i64..=Amount::MAX.get() / 8,
        0i64..=Amount::MAX.get(),
    ]
}

// ---------------------------------------------------------------- payment status

fn record_payment(status: OrderPaymentStatus) -> OrderCommand {
    OrderCommand::RecordPaymentStatus { status, at: at(40) }
}

fn payment_status_changed(
    previous: OrderPaymentStatus,
    payment_status: OrderPaymentStatus,
) -> OrderEvent {
    OrderEvent::PaymentStatusChanged(OrderPaymentStatusChanged {
        order_id: ORDER,
        customer_id: CUSTOMER,
        payment_status,
        previous,
        changed_at: at(40),
    })
}

#[test]
fn a_new_order_is_unpaid() {
    assert_eq!(
        given(vec![placed()]).payment_status,
        OrderPaymentStatus::Unpaid
    );
}

#[test]
fn recording_a_new_payment_status_records_it_with_the_previous_one() {
    let events = given(vec![placed(), confirmed()])
        .decide(record_payment(OrderPaymentStatus::Paid))
        .unwrap();
    assert_eq!(
        events,
        vec![payment_status_changed(
            OrderPaymentStatus::Unpaid,
            OrderPaymentStatus::Paid
        )]
    );
    let order = given(vec![placed(), confirmed(), events[0].clone()]);
    assert_eq!(order.payment_status, OrderPaymentStatus::Paid);
    assert_eq!(
        order.status,
        OrderStatus::Confirmed,
        "the lifecycle is untouched"
    );
}

#[test]
fn recording_the_status_the_order_already_has_changes_nothing() {
    let paid = payment_status_changed(OrderPaymentStatus::Unpaid, OrderPaymentStatus::Paid);
    let events = given(vec![placed(), paid])
        .decide(record_payment(OrderPaymentStatus::Paid))
        .unwrap();
    assert_eq!(events, vec![]);
}

#[test]
fn a_cancelled_or_delivered_order_still_records_its_payment_status() {
    let cancelled_then_refunded = given(vec![placed(), cancelled()])
        .decide(record_payment(OrderPaymentStatus::Refunded))
        .unwrap();
    assert_eq!(cancelled_then_refunded.len(), 1);
    let delivered_then_refunded = given(vec![
        placed(),
        confirmed(),
        shipped(1, &[("MUG", 2), ("TEE", 1)], true),
        delivered(),
    ])
    .decide(record_payment(OrderPaymentStatus::PartiallyRefunded))
    .unwrap();
    assert_eq!(delivered_then_refunded.len(), 1);
}

#[test]
fn recording_a_payment_status_on_an_unknown_order_is_not_found() {
    assert_not_found(given(vec![]).decide(record_payment(OrderPaymentStatus::Paid)));
}

proptest! {
    #[test]
    fn placing_an_order_totals_exactly_or_refuses_the_overflow(
        lines in prop::collection::vec((1i64..=1_000_000, unit_price()), 1..8)
    ) {
        let command = place(
            lines
                .iter()
                .enumerate()
                .map(|(i, (q, p))| new_line(&format!("SKU-{i}"), *q, *p))
                .collect(),
        );
        let products: Vec<i128> = lines.iter().map(|(q, p)| i128::from(*q) * i128::from(*p)).collect();
        let exact: i128 = products.iter().sum();
        let max = i128::from(Amount::MAX.get());
        let fits = products.iter().all(|p| *p <= max) && exact <= max;

        match given(vec![]).decide(command) {
            Ok(events) => {
                prop_assert!(fits, "accepted a total of {exact}, beyond Amount::MAX");
                prop_assert_eq!(events.len(), 1);
                let OrderEvent::Placed(e) = &events[0] else {
                    return Err(TestCaseError::fail(format!("not order.placed: {events:?}")));
                };
                prop_assert_eq!(i128::from(e.total.get()), exact);
                for (line, product) in e.lines.iter().zip(&products) {
                    prop_assert_eq!(i128::from(line.line_total.get()), *product);
                }
            }
            Err(err) => {
                prop_assert!(!fits, "refused a representable total {exact}: {err:?}");
                let is_invalid = matches!(err, DomainError::Invalid { .. });
                prop_assert!(is_invalid, "expected Invalid, got {:?}", err);
            }
        }
    }
}
