//! Order: `placed → confirmed → shipped (partially) → delivered`, and `placed | confirmed →
//! cancelled` while nothing has shipped.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{types, EventName};
use crate::personal::Personal;
use crate::values::{Address, Quantity, Sku, Text};
use crate::{Amount, Currency, DomainError};

#[cfg(test)]
mod tests;

/// Most lines one order may hold.
pub const MAX_LINES: usize = 200;

// ---------------------------------------------------------------- commands

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place(PlaceOrder),
    Confirm {
        at: DateTime<Utc>,
    },
    Cancel {
        reason: Text,
        at: DateTime<Utc>,
    },
    Ship(ShipOrder),
    Deliver {
        at: DateTime<Utc>,
    },
    /// Issued by the process manager when the order's payments change.
    RecordPaymentStatus {
        status: OrderPaymentStatus,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub lines: Vec<NewLine>,
    pub shipping_address: Option<Address>,
    pub placed_at: DateTime<Utc>,
}

/// A line of an order being placed, as a request body gives it (the server computes the
/// line's total).
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
// For the API's document only (`additionalProperties: false`); the API reads it by hand.
#[serde(deny_unknown_fields)]
pub struct NewLine {
    pub sku: Sku,
    pub name: Text,
    pub quantity: Quantity,
    /// Minor units, zero or more, at most 10^15; the order's total is at most 10^15 too.
    pub unit_price: Amount,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShipOrder {
    pub carrier: Text,
    pub tracking_number: Text,
    /// `None` ships everything not yet shipped.
    pub lines: Option<Vec<ShipmentLine>>,
    /// What the order's payments cover now (authorized or captured, less refunds); the
    /// command layer folds the order's payments to find it.
    pub covered: Amount,
    pub at: DateTime<Utc>,
}

/// How many units of one SKU a shipment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct ShipmentLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

// ---------------------------------------------------------------- events
//
// The shapes and doc comments of these types are the released JSON Schemas in
// schemas/events/: changing either is a new schema version (README, "Schemas").

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum OrderEvent {
    #[serde(rename = "order.placed")]
    Placed(OrderPlaced),
    #[serde(rename = "order.confirmed")]
    Confirmed(OrderConfirmed),
    #[serde(rename = "order.cancelled")]
    Cancelled(OrderCancelled),
    #[serde(rename = "order.shipped")]
    Shipped(OrderShipped),
    #[serde(rename = "order.delivered")]
    Delivered(OrderDelivered),
    #[serde(rename = "order.payment_status_changed")]
    PaymentStatusChanged(OrderPaymentStatusChanged),
}

impl EventName for OrderEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Placed(_) => types::ORDER_PLACED,
            Self::Confirmed(_) => types::ORDER_CONFIRMED,
            Self::Cancelled(_) => types::ORDER_CANCELLED,
            Self::Shipped(_) => types::ORDER_SHIPPED,
            Self::Delivered(_) => types::ORDER_DELIVERED,
            Self::PaymentStatusChanged(_) => types::ORDER_PAYMENT_STATUS_CHANGED,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            // v2: the shipping address may be sealed.
            Self::Placed(_) => 2,
            _ => 1,
        }
    }
}

/// A customer placed an order; line totals and the total are computed by the server. The
/// shipping address is personal data: in clear or sealed with the customer's data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    #[schemars(length(min = 1, max = MAX_LINES))]
    pub lines: Vec<PlacedLine>,
    pub total: Amount,
    pub shipping_address: Option<Personal<Address>>,
    pub placed_at: DateTime<Utc>,
}

/// One line of a placed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlacedLine {
    pub sku: Sku,
    pub name: Text,
    pub quantity: Quantity,
    pub unit_price: Amount,
    pub line_total: Amount,
}

/// The order was confirmed and may now be paid for and shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub confirmed_at: DateTime<Utc>,
}

/// The order was cancelled before anything shipped. Carries the customer, currency and
/// total so that views need not look the order up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub total: Amount,
    pub reason: Text,
    pub cancelled_at: DateTime<Utc>,
}

/// A shipment left with some or all of the order's units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// 1 for the first shipment of this order, then 2, …
    #[schemars(range(min = 1))]
    pub shipment_number: u32,
    pub carrier: Text,
    pub tracking_number: Text,
    #[schemars(length(min = 1))]
    pub lines: Vec<ShipmentLine>,
    /// True when this shipment leaves nothing of the order unshipped.
    pub fully_shipped: bool,
    pub shipped_at: DateTime<Utc>,
}

/// The fully shipped order reached the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderDelivered {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub delivered_at: DateTime<Utc>,
}

/// The order's payment status moved, as derived from its payments by the process manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaymentStatusChanged {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_status: OrderPaymentStatus,
    pub previous: OrderPaymentStatus,
    pub changed_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- state

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No order with this id has been placed.
    #[default]
    None,
    Placed,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the order's payments amount to, from
/// [`crate::payment::order_payment_status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    description = "What the order's payments amount to: unpaid, authorized (the total), paid (the total captured), partially_refunded or refunded."
)]
pub enum OrderPaymentStatus {
    #[default]
    Unpaid,
    Authorized,
    Paid,
    PartiallyRefunded,
    Refunded,
}

impl OrderPaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "unpaid",
            Self::Authorized => "authorized",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FulfillmentStatus {
    Unfulfilled,
    PartiallyShipped,
    Shipped,
    Delivered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub name: Text,
    pub quantity: Quantity,
    pub unit_price: Amount,
    pub line_total: Amount,
    pub shipped: u32,
}

impl OrderLine {
    fn remaining(&self) -> u32 {
        self.quantity.get().saturating_sub(self.shipped)
    }
}

/// The state folded from an order's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: OrderStatus,
    /// As last recorded by the process manager.
    #[serde(default)]
    pub payment_status: OrderPaymentStatus,
    pub currency: Option<Currency>,
    pub lines: Vec<OrderLine>,
    pub total: Amount,
    pub shipping_address: Option<Personal<Address>>,
    pub shipments: u32,
    pub cancellation_reason: Option<Text>,
    pub placed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Order {
    pub fn exists(&self) -> bool {
        self.status != OrderStatus::None
    }

    pub fn fulfillment_status(&self) -> FulfillmentStatus {
        if self.status == OrderStatus::Delivered {
            FulfillmentStatus::Delivered
        } else if self.lines.iter().all(|l| l.remaining() == 0) && self.shipments > 0 {
            FulfillmentStatus::Shipped
        } else if self.lines.iter().any(|l| l.shipped > 0) {
            FulfillmentStatus::PartiallyShipped
        } else {
            FulfillmentStatus::Unfulfilled
        }
    }

    fn fully_shipped(&self) -> bool {
        self.shipments > 0 && self.lines.iter().all(|l| l.remaining() == 0)
    }

    /// Decide what a command means for this order, or why it is refused.
    pub fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        let decided = self.decide_events(command);
        #[cfg(test)]
        crate::schema::conformance::check(&decided);
        decided
    }

    fn decide_events(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        let event = match command {
            OrderCommand::Place(place) => return self.place(place),
            OrderCommand::Confirm { at } => {
                let (order_id, customer_id) = self.open()?;
                match self.status {
                    OrderStatus::Placed => {}
                    OrderStatus::Confirmed => {
                        return Err(DomainError::refused(
                            "order-already-confirmed",
                            "the order is already confirmed",
                        ))
                    }
                    _ => return Err(already_shipped()),
                }
                OrderEvent::Confirmed(OrderConfirmed {
                    order_id,
                    customer_id,
                    confirmed_at: at,
                })
            }
            OrderCommand::Cancel { reason, at } => {
                let (order_id, customer_id) = self.open()?;
                if self.shipments > 0 {
                    return Err(DomainError::refused(
                        "order-already-shipped",
                        "an order cannot be cancelled once something has shipped",
                    ));
                }
                OrderEvent::Cancelled(OrderCancelled {
                    order_id,
                    customer_id,
                    currency: self.currency_or_err()?,
                    total: self.total,
                    reason,
                    cancelled_at: at,
                })
            }
            OrderCommand::Ship(ship) => {
                let (order_id, customer_id) = self.open()?;
                self.ship(order_id, customer_id, ship)?
            }
            OrderCommand::Deliver { at } => {
                let (order_id, customer_id) = self.open()?;
                match self.status {
                    OrderStatus::Shipped if self.fully_shipped() => {}
                    OrderStatus::Shipped => {
                        return Err(DomainError::refused(
                            "order-not-fully-shipped",
                            "only an order whose every line has shipped can be delivered",
                        ))
                    }
                    _ => {
                        return Err(DomainError::refused(
                            "order-not-shipped",
                            "the order has not shipped yet",
                        ))
                    }
                }
                OrderEvent::Delivered(OrderDelivered {
                    order_id,
                    customer_id,
                    delivered_at: at,
                })
            }
            // Not a lifecycle command: payments settle after cancellation and delivery too.
            OrderCommand::RecordPaymentStatus { status, at } => {
                let (Some(order_id), Some(customer_id)) = (self.id, self.customer_id) else {
                    return Err(DomainError::NotFound { aggregate: "order" });
                };
                if status == self.payment_status {
                    return Ok(vec![]);
                }
                OrderEvent::PaymentStatusChanged(OrderPaymentStatusChanged {
                    order_id,
                    customer_id,
                    payment_status: status,
                    previous: self.payment_status,
                    changed_at: at,
                })
            }
        };
        Ok(vec![event])
    }

    fn place(&self, cmd: PlaceOrder) -> Result<Vec<OrderEvent>, DomainError> {
        if self.exists() {
            return Err(DomainError::AlreadyExists { aggregate: "order" });
        }
        if cmd.lines.is_empty() {
            return Err(DomainError::invalid("lines", "must hold at least one line"));
        }
        if cmd.lines.len() > MAX_LINES {
            return Err(DomainError::invalid(
                "lines",
                format!("must hold at most {MAX_LINES} lines"),
            ));
        }
        let mut lines = Vec::with_capacity(cmd.lines.len());
        for (i, line) in cmd.lines.into_iter().enumerate() {
            if lines.iter().any(|l: &PlacedLine| l.sku == line.sku) {
                return Err(DomainError::invalid(
                    format!("lines[{i}].sku"),
                    "appears on an earlier line; put the whole quantity on one line",
                ));
            }
            let line_total = line
                .unit_price
                .checked_mul(line.quantity.get())
                .ok_or_else(|| overflow(format!("lines[{i}]")))?;
            lines.push(PlacedLine {
                sku: line.sku,
                name: line.name,
                quantity: line.quantity,
                unit_price: line.unit_price,
                line_total,
            });
        }
        let total = Amount::checked_sum(lines.iter().map(|l| l.line_total))
            .ok_or_else(|| overflow("lines".into()))?;
        Ok(vec![OrderEvent::Placed(OrderPlaced {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            currency: cmd.currency,
            lines,
            total,
            shipping_address: cmd.shipping_address.map(Personal::from),
            placed_at: cmd.placed_at,
        })])
    }

    fn ship(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        cmd: ShipOrder,
    ) -> Result<OrderEvent, DomainError> {
        match self.status {
            OrderStatus::Confirmed => {}
            OrderStatus::Shipped if !self.fully_shipped() => {}
            OrderStatus::Shipped => return Err(already_shipped()),
            _ => {
                return Err(DomainError::refused(
                    "order-not-confirmed",
                    "only a confirmed order can ship",
                ))
            }
        }
        if cmd.covered < self.total {
            return Err(DomainError::refused(
                "order-not-paid",
                format!(
                    "payments cover {} of the order's total {}; authorize or capture the rest first",
                    cmd.covered, self.total
                ),
            ));
        }
        let lines = match cmd.lines {
            None => self
                .lines
                .iter()
                .filter(|l| l.remaining() > 0)
                .filter_map(|l| {
                    Quantity::new(i64::from(l.remaining()))
                        .ok()
                        .map(|quantity| ShipmentLine {
                            sku: l.sku.clone(),
                            quantity,
                        })
                })
                .collect(),
            Some(lines) => {
                if lines.is_empty() {
                    return Err(DomainError::invalid(
                        "lines",
                        "must name at least one line, or be left out to ship everything",
                    ));
                }
                for (i, line) in lines.iter().enumerate() {
                    if lines[..i].iter().any(|l| l.sku == line.sku) {
                        return Err(DomainError::invalid(
                            format!("lines[{i}].sku"),
                            "appears twice in this shipment",
                        ));
                    }
                    let Some(ordered) = self.lines.iter().find(|l| l.sku == line.sku) else {
                        return Err(DomainError::invalid(
                            format!("lines[{i}].sku"),
                            "is not on this order",
                        ));
                    };
                    if line.quantity.get() > ordered.remaining() {
                        return Err(DomainError::refused(
                            "shipment-exceeds-ordered",
                            format!(
                                "{} of {} remain to ship, not {}",
                                ordered.remaining(),
                                line.sku,
                                line.quantity.get()
                            ),
                        ));
                    }
                }
                lines
            }
        };
        let fully_shipped = self.lines.iter().all(|ordered| {
            let now = lines
                .iter()
                .find(|l| l.sku == ordered.sku)
                .map_or(0, |l| l.quantity.get());
            ordered.remaining() == now
        });
        Ok(OrderEvent::Shipped(OrderShipped {
            order_id,
            customer_id,
            shipment_number: self.shipments + 1,
            carrier: cmd.carrier,
            tracking_number: cmd.tracking_number,
            lines,
            fully_shipped,
            shipped_at: cmd.at,
        }))
    }

    /// The order's ids, or why it takes no lifecycle command: unknown, cancelled or delivered.
    fn open(&self) -> Result<(Uuid, Uuid), DomainError> {
        let (Some(order_id), Some(customer_id)) = (self.id, self.customer_id) else {
            return Err(DomainError::NotFound { aggregate: "order" });
        };
        match self.status {
            OrderStatus::Cancelled => Err(DomainError::refused(
                "order-cancelled",
                "the order is cancelled and takes no further lifecycle command",
            )),
            OrderStatus::Delivered => Err(DomainError::refused(
                "order-delivered",
                "the order is delivered and takes no further lifecycle command",
            )),
            _ => Ok((order_id, customer_id)),
        }
    }

    fn currency_or_err(&self) -> Result<Currency, DomainError> {
        self.currency
            .ok_or(DomainError::NotFound { aggregate: "order" })
    }

    /// Fold one event into the state. Only assigns: every decision was made in `decide`.
    pub fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::Placed(e) => {
                self.id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.status = OrderStatus::Placed;
                self.currency = Some(e.currency);
                self.total = e.total;
                self.lines = e
                    .lines
                    .into_iter()
                    .map(|l| OrderLine {
                        sku: l.sku,
                        name: l.name,
                        quantity: l.quantity,
                        unit_price: l.unit_price,
                        line_total: l.line_total,
                        shipped: 0,
                    })
                    .collect();
                self.shipping_address = e.shipping_address;
                self.placed_at = Some(e.placed_at);
                self.updated_at = Some(e.placed_at);
            }
            OrderEvent::Confirmed(e) => {
                self.status = OrderStatus::Confirmed;
                self.updated_at = Some(e.confirmed_at);
            }
            OrderEvent::Cancelled(e) => {
                self.status = OrderStatus::Cancelled;
                self.cancellation_reason = Some(e.reason);
                self.updated_at = Some(e.cancelled_at);
            }
            OrderEvent::Shipped(e) => {
                self.status = OrderStatus::Shipped;
                self.shipments = e.shipment_number;
                for shipped in e.lines {
                    if let Some(line) = self.lines.iter_mut().find(|l| l.sku == shipped.sku) {
                        line.shipped = line.shipped.saturating_add(shipped.quantity.get());
                    }
                }
                self.updated_at = Some(e.shipped_at);
            }
            OrderEvent::Delivered(e) => {
                self.status = OrderStatus::Delivered;
                self.updated_at = Some(e.delivered_at);
            }
            OrderEvent::PaymentStatusChanged(e) => {
                self.payment_status = e.payment_status;
                self.updated_at = Some(e.changed_at);
            }
        }
    }
}

fn already_shipped() -> DomainError {
    DomainError::refused("order-already-shipped", "the order has already shipped")
}

fn overflow(field: String) -> DomainError {
    DomainError::invalid(
        field,
        format!(
            "amounts add up to more than the largest amount, {} minor units",
            Amount::MAX
        ),
    )
}
