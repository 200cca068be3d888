//! Test fixtures for the read models' folds: a log the domain's own aggregates decide, as
//! the feed delivers it (each event serialized, stamped with its stream's sequence and a
//! global position, then decoded the way the runner decodes it).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use ordo_commands::feed::{Checkpoint, FeedEvent};
use ordo_domain::customer::{Customer, CustomerCommand, RegisterCustomer};
use ordo_domain::event::EventName;
use ordo_domain::order::{NewLine, Order, OrderCommand, PlaceOrder, ShipOrder, ShipmentLine};
use ordo_domain::payment::{CreatePayment, OrderFacts, Payment, PaymentCommand};
use ordo_domain::values::{Email, Quantity, Sku, Text};
use ordo_domain::{Amount, Currency};
use serde::Serialize;
use uuid::Uuid;

use crate::model::Decoded;

/// Minutes after a fixed start, 2026-01-01T00:00:00Z.
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

pub fn text(raw: &str) -> Text {
    Text::parse(raw).unwrap()
}

pub fn amount(minor: i64) -> Amount {
    Amount::new(minor).unwrap()
}

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// A line of `quantity` × `unit_price` of the article `sku`.
pub fn line(sku: &str, quantity: i64, unit_price: i64) -> NewLine {
    NewLine {
        sku: Sku::parse(sku).unwrap(),
        name: text(&format!("item {sku}")),
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: amount(unit_price),
    }
}

/// The domain's aggregates and the log of what they decided, in the channel `channel`.
/// Every command must be accepted: a fixture that the domain refuses is a broken test.
pub struct Log {
    pub channel: String,
    orders: HashMap<Uuid, Order>,
    payments: HashMap<Uuid, Payment>,
    customers: HashMap<Uuid, Customer>,
    /// Each stream's last sequence.
    sequences: HashMap<Uuid, i64>,
    position: i64,
    pending: Vec<Decoded>,
}

impl Log {
    pub fn new(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
            orders: HashMap::new(),
            payments: HashMap::new(),
            customers: HashMap::new(),
            sequences: HashMap::new(),
            position: 0,
            pending: Vec::new(),
        }
    }

    /// The events recorded since the last batch taken, as one batch of the feed.
    pub fn batch(&mut self) -> Vec<Decoded> {
        std::mem::take(&mut self.pending)
    }

    pub fn register(&mut self, customer_id: Uuid, email: &str, name: &str, minute: i64) {
        self.customer(
            customer_id,
            CustomerCommand::Register(RegisterCustomer {
                customer_id,
                email: Email::parse(email).unwrap(),
                name: text(name),
                phone: None,
                registered_at: at(minute),
            }),
        );
    }

    pub fn place(&mut self, order_id: Uuid, customer_id: Uuid, lines: Vec<NewLine>, minute: i64) {
        self.order(
            order_id,
            OrderCommand::Place(PlaceOrder {
                order_id,
                customer_id,
                currency: eur(),
                lines,
                shipping_address: None,
                placed_at: at(minute),
            }),
        );
    }

    /// Ship `lines` (`None`: everything left) of an order its payments cover in full.
    pub fn ship(&mut self, order_id: Uuid, lines: Option<Vec<(&str, i64)>>, minute: i64) {
        let covered = self.orders[&order_id].total;
        let lines = lines.map(|lines| {
            lines
                .into_iter()
                .map(|(sku, quantity)| ShipmentLine {
                    sku: Sku::parse(sku).unwrap(),
                    quantity: Quantity::new(quantity).unwrap(),
                })
                .collect()
        });
        self.order(
            order_id,
            OrderCommand::Ship(ShipOrder {
                carrier: text("DHL"),
                tracking_number: text("JD0001"),
                lines,
                covered,
                at: at(minute),
            }),
        );
    }

    /// Create a payment of `minor` units for an order.
    pub fn pay(&mut self, payment_id: Uuid, order_id: Uuid, minor: i64, minute: i64) {
        let order = &self.orders[&order_id];
        let order = OrderFacts {
            order_id,
            customer_id: order.customer_id.unwrap(),
            currency: eur(),
            status: order.status,
        };
        self.payment(
            payment_id,
            PaymentCommand::Create(CreatePayment {
                payment_id,
                amount: amount(minor),
                currency: eur(),
                method: text("card"),
                order,
                created_at: at(minute),
            }),
        );
    }

    /// Authorize a pending payment's whole amount.
    pub fn authorize(&mut self, payment_id: Uuid, minute: i64) {
        let command = PaymentCommand::Authorize {
            provider_reference: text("psp-1"),
            amount: None,
            at: at(minute),
        };
        self.payment(payment_id, command);
    }

    pub fn capture(&mut self, payment_id: Uuid, minor: i64, minute: i64) {
        let command = PaymentCommand::Capture {
            amount: amount(minor),
            at: at(minute),
        };
        self.payment(payment_id, command);
    }

    pub fn refund(&mut self, payment_id: Uuid, minor: i64, minute: i64) {
        let command = PaymentCommand::Refund {
            amount: amount(minor),
            reason: text("returned"),
            at: at(minute),
        };
        self.payment(payment_id, command);
    }

    pub fn order(&mut self, id: Uuid, command: OrderCommand) {
        let events = decide(&mut self.orders, id, |o| o.decide(command), Order::apply);
        self.record("order", id, &events);
    }

    pub fn payment(&mut self, id: Uuid, command: PaymentCommand) {
        let events = decide(
            &mut self.payments,
            id,
            |p| p.decide(command),
            Payment::apply,
        );
        self.record("payment", id, &events);
    }

    pub fn customer(&mut self, id: Uuid, command: CustomerCommand) {
        let events = decide(
            &mut self.customers,
            id,
            |c| c.decide(command),
            Customer::apply,
        );
        self.record("customer", id, &events);
    }

    /// Append `events` of the stream `id`, numbered after the stream's events so far.
    fn record<E: EventName + Serialize>(&mut self, aggregate_type: &str, id: Uuid, events: &[E]) {
        for event in events {
            self.position += 1;
            let sequence = self.sequences.entry(id).or_default();
            *sequence += 1;
            self.pending.push(Decoded::new(FeedEvent {
                checkpoint: Checkpoint::at(self.position),
                event_id: Uuid::new_v4(),
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: id.to_string(),
                sequence: *sequence,
                event_type: event.name().to_owned(),
                event_version: event.schema_version().to_string(),
                recorded_at: at(self.position),
                payload: serde_json::to_string(event).unwrap(),
                metadata: String::new(),
                channel: self.channel.clone(),
            }));
        }
    }
}

/// Decide a command on the aggregate `id` (new if unknown), which must accept it, and apply
/// the events to it.
fn decide<A: Default, E: Clone>(
    aggregates: &mut HashMap<Uuid, A>,
    id: Uuid,
    decide: impl FnOnce(&A) -> Result<Vec<E>, ordo_domain::DomainError>,
    apply: fn(&mut A, E),
) -> Vec<E> {
    let aggregate = aggregates.entry(id).or_default();
    let events = decide(aggregate).unwrap();
    for event in &events {
        apply(aggregate, event.clone());
    }
    events
}
