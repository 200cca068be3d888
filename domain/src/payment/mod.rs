//! Payment: `pending → authorized → captured (partially, repeatedly) → refunded (partially,
//! repeatedly)`, `pending → failed`, `authorized → voided` while nothing is captured.
//!
//! Invariants: `0 ≤ captured ≤ authorized ≤ amount` and `0 ≤ refunded ≤ captured`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{types, EventName};
use crate::order::{OrderPaymentStatus, OrderStatus};
use crate::values::Text;
use crate::{Amount, Currency, DomainError};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------- commands

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Create(CreatePayment),
    Authorize {
        provider_reference: Text,
        /// `None` authorizes the payment's whole amount.
        amount: Option<Amount>,
        at: DateTime<Utc>,
    },
    Capture {
        amount: Amount,
        at: DateTime<Utc>,
    },
    Refund {
        amount: Amount,
        reason: Text,
        at: DateTime<Utc>,
    },
    Void {
        at: DateTime<Utc>,
    },
    Fail {
        reason: Text,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreatePayment {
    pub payment_id: Uuid,
    pub amount: Amount,
    pub currency: Currency,
    pub method: Text,
    /// The order this payment is for, as the command layer found it.
    pub order: OrderFacts,
    pub created_at: DateTime<Utc>,
}

/// What a payment needs to know of its order when it is created.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFacts {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub status: OrderStatus,
}

// ---------------------------------------------------------------- events
//
// The shapes and doc comments of these types are the released JSON Schemas in
// schemas/events/: changing either is a new schema version (README, "Schemas").

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    #[serde(rename = "payment.created")]
    Created(PaymentCreated),
    #[serde(rename = "payment.authorized")]
    Authorized(PaymentAuthorized),
    #[serde(rename = "payment.captured")]
    Captured(PaymentCaptured),
    #[serde(rename = "payment.refunded")]
    Refunded(PaymentRefunded),
    #[serde(rename = "payment.voided")]
    Voided(PaymentVoided),
    #[serde(rename = "payment.failed")]
    Failed(PaymentFailed),
}

impl PaymentEvent {
    /// The order the payment is for: every payment event names it.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Created(e) => e.order_id,
            Self::Authorized(e) => e.order_id,
            Self::Captured(e) => e.order_id,
            Self::Refunded(e) => e.order_id,
            Self::Voided(e) => e.order_id,
            Self::Failed(e) => e.order_id,
        }
    }
}

impl EventName for PaymentEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Created(_) => types::PAYMENT_CREATED,
            Self::Authorized(_) => types::PAYMENT_AUTHORIZED,
            Self::Captured(_) => types::PAYMENT_CAPTURED,
            Self::Refunded(_) => types::PAYMENT_REFUNDED,
            Self::Voided(_) => types::PAYMENT_VOIDED,
            Self::Failed(_) => types::PAYMENT_FAILED,
        }
    }
}

/// A payment for an order was created; it is pending until authorized or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCreated {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Amount,
    pub currency: Currency,
    pub method: Text,
    pub created_at: DateTime<Utc>,
}

/// The provider authorized some or all of the payment's amount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentAuthorized {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub currency: Currency,
    pub amount: Amount,
    pub provider_reference: Text,
    pub authorized_at: DateTime<Utc>,
}

/// Part or all of the authorization was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCaptured {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub currency: Currency,
    pub amount: Amount,
    /// Everything captured on this payment, this capture included.
    pub captured_total: Amount,
    pub captured_at: DateTime<Utc>,
}

/// Part or all of what was captured was refunded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub amount: Amount,
    /// Everything refunded on this payment, this refund included.
    pub refunded_total: Amount,
    pub fully_refunded: bool,
    pub reason: Text,
    pub refunded_at: DateTime<Utc>,
}

/// The authorization was released before anything was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentVoided {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub voided_at: DateTime<Utc>,
}

/// The provider refused the pending payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub reason: Text,
    pub failed_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- state

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// No payment with this id has been created.
    #[default]
    None,
    Pending,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Voided,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: PaymentStatus,
    pub currency: Option<Currency>,
    pub method: Option<Text>,
    pub provider_reference: Option<Text>,
    pub amount: Amount,
    pub authorized: Amount,
    pub captured: Amount,
    pub refunded: Amount,
    pub failure_reason: Option<Text>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Payment {
    pub fn exists(&self) -> bool {
        self.status != PaymentStatus::None
    }

    /// How much of its order this payment covers for shipping: what is still collectable.
    /// While captures are possible that is the authorization less refunds; once refunds
    /// close the payment to captures, only what was captured and kept counts. Pending,
    /// failed and voided payments cover nothing.
    pub fn coverage(&self) -> Amount {
        let kept = |from: Amount| from.checked_sub(self.refunded).unwrap_or(Amount::ZERO);
        match self.status {
            PaymentStatus::Authorized | PaymentStatus::Captured => kept(self.authorized),
            PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => kept(self.captured),
            _ => Amount::ZERO,
        }
    }

    /// Decide what a command means for this payment, or why it is refused.
    pub fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, DomainError> {
        let decided = self.decide_events(command);
        #[cfg(test)]
        crate::schema::conformance::check(&decided);
        decided
    }

    fn decide_events(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, DomainError> {
        let event = match command {
            PaymentCommand::Create(create) => return self.create(create),
            PaymentCommand::Authorize {
                provider_reference,
                amount,
                at,
            } => {
                let (payment_id, order_id, currency) = self.ids()?;
                self.require(
                    PaymentStatus::Pending,
                    "payment-not-pending",
                    "only a pending payment can be authorized",
                )?;
                let amount = amount.unwrap_or(self.amount);
                if amount.is_zero() {
                    return Err(DomainError::invalid("amount", "must be greater than zero"));
                }
                if amount > self.amount {
                    return Err(DomainError::refused(
                        "authorization-exceeds-amount",
                        format!("cannot authorize {amount} on a payment of {}", self.amount),
                    ));
                }
                PaymentEvent::Authorized(PaymentAuthorized {
                    payment_id,
                    order_id,
                    currency,
                    amount,
                    provider_reference,
                    authorized_at: at,
                })
            }
            PaymentCommand::Capture { amount, at } => {
                let (payment_id, order_id, currency) = self.ids()?;
                match self.status {
                    PaymentStatus::Authorized | PaymentStatus::Captured => {}
                    PaymentStatus::Pending => return Err(not_authorized()),
                    _ => return Err(self.closed("captured")),
                }
                positive(amount)?;
                let captured_total = self
                    .captured
                    .checked_add(amount)
                    .filter(|total| *total <= self.authorized)
                    .ok_or_else(|| {
                        DomainError::refused(
                            "capture-exceeds-authorized",
                            format!(
                                "{} of {} authorized is still capturable, not {amount}",
                                self.capturable(),
                                self.authorized
                            ),
                        )
                    })?;
                PaymentEvent::Captured(PaymentCaptured {
                    payment_id,
                    order_id,
                    currency,
                    amount,
                    captured_total,
                    captured_at: at,
                })
            }
            PaymentCommand::Refund { amount, reason, at } => {
                let (payment_id, order_id, currency) = self.ids()?;
                match self.status {
                    PaymentStatus::Captured | PaymentStatus::PartiallyRefunded => {}
                    PaymentStatus::Pending | PaymentStatus::Authorized => {
                        return Err(DomainError::refused(
                            "payment-not-captured",
                            "nothing has been captured, so nothing can be refunded",
                        ))
                    }
                    _ => return Err(self.closed("refunded")),
                }
                positive(amount)?;
                let refunded_total = self
                    .refunded
                    .checked_add(amount)
                    .filter(|total| *total <= self.captured)
                    .ok_or_else(|| {
                        DomainError::refused(
                            "refund-exceeds-captured",
                            format!(
                                "{} of {} captured is still refundable, not {amount}",
                                self.captured.checked_sub(self.refunded).unwrap_or_default(),
                                self.captured
                            ),
                        )
                    })?;
                PaymentEvent::Refunded(PaymentRefunded {
                    payment_id,
                    order_id,
                    customer_id: self.customer_id.unwrap_or_default(),
                    currency,
                    amount,
                    refunded_total,
                    fully_refunded: refunded_total == self.captured,
                    reason,
                    refunded_at: at,
                })
            }
            PaymentCommand::Void { at } => {
                let (payment_id, order_id, _) = self.ids()?;
                match self.status {
                    PaymentStatus::Authorized => {}
                    PaymentStatus::Pending => return Err(not_authorized()),
                    PaymentStatus::Captured
                    | PaymentStatus::PartiallyRefunded
                    | PaymentStatus::Refunded => {
                        return Err(DomainError::refused(
                            "payment-already-captured",
                            "a payment with captures cannot be voided; refund it instead",
                        ))
                    }
                    _ => return Err(self.closed("voided")),
                }
                PaymentEvent::Voided(PaymentVoided {
                    payment_id,
                    order_id,
                    voided_at: at,
                })
            }
            PaymentCommand::Fail { reason, at } => {
                let (payment_id, order_id, _) = self.ids()?;
                self.require(
                    PaymentStatus::Pending,
                    "payment-not-pending",
                    "only a pending payment can fail",
                )?;
                PaymentEvent::Failed(PaymentFailed {
                    payment_id,
                    order_id,
                    reason,
                    failed_at: at,
                })
            }
        };
        Ok(vec![event])
    }

    fn create(&self, cmd: CreatePayment) -> Result<Vec<PaymentEvent>, DomainError> {
        if self.exists() {
            return Err(DomainError::AlreadyExists {
                aggregate: "payment",
            });
        }
        positive(cmd.amount)?;
        if cmd.currency != cmd.order.currency {
            return Err(DomainError::invalid(
                "currency",
                format!("must be the order's currency, {}", cmd.order.currency),
            ));
        }
        match cmd.order.status {
            OrderStatus::None => {
                return Err(DomainError::invalid("order_id", "no order has this id"))
            }
            OrderStatus::Cancelled => {
                return Err(DomainError::refused(
                    "order-cancelled",
                    "a cancelled order takes no new payment",
                ))
            }
            OrderStatus::Delivered => {
                return Err(DomainError::refused(
                    "order-delivered",
                    "a delivered order takes no new payment",
                ))
            }
            _ => {}
        }
        Ok(vec![PaymentEvent::Created(PaymentCreated {
            payment_id: cmd.payment_id,
            order_id: cmd.order.order_id,
            customer_id: cmd.order.customer_id,
            amount: cmd.amount,
            currency: cmd.currency,
            method: cmd.method,
            created_at: cmd.created_at,
        })])
    }

    fn ids(&self) -> Result<(Uuid, Uuid, Currency), DomainError> {
        match (self.id, self.order_id, self.currency) {
            (Some(id), Some(order_id), Some(currency)) => Ok((id, order_id, currency)),
            _ => Err(DomainError::NotFound {
                aggregate: "payment",
            }),
        }
    }

    fn require(
        &self,
        status: PaymentStatus,
        rule: &'static str,
        detail: &str,
    ) -> Result<(), DomainError> {
        if self.status == status {
            Ok(())
        } else {
            Err(DomainError::refused(
                rule,
                format!("{detail}; this one is {}", self.status.as_str()),
            ))
        }
    }

    fn capturable(&self) -> Amount {
        self.authorized
            .checked_sub(self.captured)
            .unwrap_or_default()
    }

    fn closed(&self, verb: &str) -> DomainError {
        let rule = match self.status {
            PaymentStatus::Voided => "payment-voided",
            PaymentStatus::Failed => "payment-failed",
            _ => "payment-already-refunded",
        };
        DomainError::refused(
            rule,
            format!(
                "a {} payment cannot be {verb}",
                self.status.as_str().replace('_', " ")
            ),
        )
    }

    pub fn apply(&mut self, event: PaymentEvent) {
        match event {
            PaymentEvent::Created(e) => {
                self.id = Some(e.payment_id);
                self.order_id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.status = PaymentStatus::Pending;
                self.currency = Some(e.currency);
                self.method = Some(e.method);
                self.amount = e.amount;
                self.created_at = Some(e.created_at);
                self.updated_at = Some(e.created_at);
            }
            PaymentEvent::Authorized(e) => {
                self.status = PaymentStatus::Authorized;
                self.authorized = e.amount;
                self.provider_reference = Some(e.provider_reference);
                self.updated_at = Some(e.authorized_at);
            }
            PaymentEvent::Captured(e) => {
                self.status = PaymentStatus::Captured;
                self.captured = e.captured_total;
                self.updated_at = Some(e.captured_at);
            }
            PaymentEvent::Refunded(e) => {
                self.status = if e.fully_refunded {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
                self.refunded = e.refunded_total;
                self.updated_at = Some(e.refunded_at);
            }
            PaymentEvent::Voided(e) => {
                self.status = PaymentStatus::Voided;
                self.updated_at = Some(e.voided_at);
            }
            PaymentEvent::Failed(e) => {
                self.status = PaymentStatus::Failed;
                self.failure_reason = Some(e.reason);
                self.updated_at = Some(e.failed_at);
            }
        }
    }
}

fn positive(amount: Amount) -> Result<(), DomainError> {
    if amount.is_zero() {
        Err(DomainError::invalid("amount", "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn not_authorized() -> DomainError {
    DomainError::refused(
        "payment-not-authorized",
        "the payment has not been authorized",
    )
}

/// The payment status an order shows, from its payments: `unpaid`,
/// `authorized`, `paid`, `partially_refunded` or `refunded`.
pub fn order_payment_status<'a>(
    order_total: Amount,
    payments: impl IntoIterator<Item = &'a Payment>,
) -> OrderPaymentStatus {
    let (mut authorized, mut captured, mut refunded) = (0i128, 0i128, 0i128);
    for p in payments {
        if matches!(
            p.status,
            PaymentStatus::Authorized
                | PaymentStatus::Captured
                | PaymentStatus::PartiallyRefunded
                | PaymentStatus::Refunded
        ) {
            // Saturating, not wrapping: i128 holds the sum of 2^64 amounts of i64, far more
            // payments than an order takes (at most 100), so it never
            // saturates; if it did, the status would stay on the side of "more", never flip.
            authorized = authorized.saturating_add(i128::from(p.authorized.get()));
            captured = captured.saturating_add(i128::from(p.captured.get()));
            refunded = refunded.saturating_add(i128::from(p.refunded.get()));
        }
    }
    let total = i128::from(order_total.get());
    if refunded > 0 {
        if refunded >= captured {
            OrderPaymentStatus::Refunded
        } else {
            OrderPaymentStatus::PartiallyRefunded
        }
    } else if captured >= total && (captured > 0 || total == 0) {
        OrderPaymentStatus::Paid
    } else if authorized >= total && authorized > 0 {
        OrderPaymentStatus::Authorized
    } else {
        OrderPaymentStatus::Unpaid
    }
}
