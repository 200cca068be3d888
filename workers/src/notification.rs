//! The notification worker: e-mails the customer when an order is placed, shipped or
//! cancelled and when a payment is refunded, over SMTP when one is configured, and records
//! every notification in `notification.notifications` either way.
//!
//! The order and payment events do not carry the e-mail address, so the worker keeps the
//! recipients it learns from `customer.registered` in `notification.customers`. An event
//! about a customer it does not know yet (redeliveries can reorder messages) is retried.
//!
//! # Once in effect
//!
//! A message is handled in the transaction that also writes its event id into
//! `notification.processed` (see [`crate::jetstream`]). The e-mail is sent inside that
//! transaction, after the notification row is written and before the commit: a failed send
//! is a retryable error, the transaction rolls back and nothing is recorded, so the message
//! is redelivered with backoff and finally dead-lettered. A redelivery of a handled message
//! finds its processed record and sends nothing.
//!
//! The one window left is at-least-once: the SMTP server accepted the mail and then the
//! commit failed (the database went away, the process died in between). The message is then
//! redelivered and the mail sent again. Without an idempotency key honoured by the mail
//! provider this is the smallest window possible: sending after the commit would turn it
//! into at-most-once (a lost mail), which is worse for an order confirmation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::Address;
use ordo_domain::customer::CustomerRegistered;
use ordo_domain::order::{OrderCancelled, OrderPlaced, OrderShipped};
use ordo_domain::payment::PaymentRefunded;
use ordo_domain::{Amount, Currency};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::jetstream::{Batching, Delivered, EventTypes, HandleError, Policy};
pub use crate::mailer::{redact_url, Mailer, DEFAULT_FROM};
use ordo_domain::event::types;

pub const NAME: &str = "notification";

/// The events that send mail; the others only touch this worker's tables (a customer's
/// contact details) or nothing, and are handled many in one transaction.
const MAILED: [&str; 4] = [
    types::ORDER_PLACED,
    types::ORDER_SHIPPED,
    types::ORDER_CANCELLED,
    types::PAYMENT_REFUNDED,
];

/// The notification worker's policy: mail goes out one message at a time, each in the
/// transaction that records it.
#[derive(Debug, Clone, Default)]
pub struct Notification {
    /// The SMTP client; without one, notifications are only recorded.
    mailer: Option<Mailer>,
}

impl Notification {
    pub fn new(mailer: Option<Mailer>) -> Self {
        Self { mailer }
    }
}

impl From<Notification> for std::sync::Arc<dyn Policy> {
    fn from(policy: Notification) -> Self {
        std::sync::Arc::new(policy)
    }
}

#[async_trait]
impl Policy for Notification {
    fn name(&self) -> &'static str {
        NAME
    }

    fn processed_table(&self) -> &'static str {
        "notification.processed"
    }

    fn batching(&self) -> Batching {
        Batching::OneByOne
    }

    async fn acts_on(&self, _: &PgPool) -> Result<EventTypes, sqlx::Error> {
        Ok(EventTypes::of(&MAILED))
    }

    async fn handle(
        &self,
        _: &PgPool,
        tx: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError> {
        for event in events {
            handle(tx, event, self.mailer.as_ref()).await?;
        }
        Ok(())
    }
}

fn money(amount: Amount, currency: &Currency) -> String {
    currency.format_minor(amount.get())
}

/// One e-mail to write, before the recipient is known.
struct Draft {
    kind: &'static str,
    order_id: Uuid,
    customer_id: Uuid,
    subject: String,
    /// The text after the greeting.
    text: String,
}

fn placed(e: &OrderPlaced) -> Draft {
    let lines: String = e
        .lines
        .iter()
        .map(|l| {
            format!(
                "  {} x {} ({}): {}\n",
                l.quantity.get(),
                l.name.as_str(),
                l.sku.as_str(),
                money(l.line_total, &e.currency)
            )
        })
        .collect();
    Draft {
        kind: "order_placed",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has been placed", e.order_id),
        text: format!(
            "thank you for your order {}.\n\n{lines}\nTotal: {}\n",
            e.order_id,
            money(e.total, &e.currency)
        ),
    }
}

fn shipped(e: &OrderShipped) -> Draft {
    let what = if e.fully_shipped {
        "The rest of your order is on its way."
    } else {
        "Part of your order is on its way; we will tell you when the rest ships."
    };
    Draft {
        kind: "order_shipped",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has shipped", e.order_id),
        text: format!(
            "shipment {} of your order {} has left us with {}, tracking number {}.\n{what}\n",
            e.shipment_number,
            e.order_id,
            e.carrier.as_str(),
            e.tracking_number.as_str()
        ),
    }
}

fn cancelled(e: &OrderCancelled) -> Draft {
    Draft {
        kind: "order_cancelled",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has been cancelled", e.order_id),
        text: format!(
            "your order {} ({}) has been cancelled: {}.\nAnything you paid will be refunded.\n",
            e.order_id,
            money(e.total, &e.currency),
            e.reason.as_str()
        ),
    }
}

fn refunded(e: &PaymentRefunded) -> Draft {
    Draft {
        kind: "payment_refunded",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!(
            "Refund of {} for your order {}",
            money(e.amount, &e.currency),
            e.order_id
        ),
        text: format!(
            "we have refunded {} for your order {}: {}.\nRefunded on this payment so far: {}.\n",
            money(e.amount, &e.currency),
            e.order_id,
            e.reason.as_str(),
            money(e.refunded_total, &e.currency)
        ),
    }
}

/// Handle one event, inside the transaction that also records it as processed.
async fn handle(
    tx: &mut PgConnection,
    event: &Delivered,
    smtp: Option<&Mailer>,
) -> Result<(), HandleError> {
    let draft = match event.event_type.as_str() {
        types::CUSTOMER_REGISTERED => {
            let e: CustomerRegistered = event.data()?;
            sqlx::query(
                "INSERT INTO notification.customers (customer_id, email, name) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name",
            )
            .bind(e.customer_id)
            .bind(e.email.as_str())
            .bind(e.name.as_str())
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        types::ORDER_PLACED => placed(&event.data()?),
        types::ORDER_SHIPPED => shipped(&event.data()?),
        types::ORDER_CANCELLED => cancelled(&event.data()?),
        types::PAYMENT_REFUNDED => refunded(&event.data()?),
        _ => return Ok(()),
    };
    notify(tx, event, draft, smtp).await
}

async fn notify(
    tx: &mut PgConnection,
    event: &Delivered,
    draft: Draft,
    smtp: Option<&Mailer>,
) -> Result<(), HandleError> {
    let customer: Option<(String, String)> =
        sqlx::query_as("SELECT email, name FROM notification.customers WHERE customer_id = $1")
            .bind(draft.customer_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((email, name)) = customer else {
        return Err(HandleError::Retry(format!(
            "customer {} not registered yet (customer.registered not handled)",
            draft.customer_id
        )));
    };
    let body = format!("Hello {name},\n\n{}\nOrdo\n", draft.text);
    // An address the SMTP client refuses will be refused on every delivery: recorded as
    // failed rather than retried.
    let recipient = email
        .parse::<Address>()
        .map(|address| Mailbox::new(Some(name.clone()), address))
        .map_err(|e| format!("recipient `{email}` refused: {e}"));
    let (status, error) = match (smtp, &recipient) {
        (None, _) => ("recorded", None),
        (Some(_), Ok(_)) => ("sent", None),
        (Some(_), Err(e)) => ("failed", Some(e.clone())),
    };
    // The row first, so a database error never follows a sent mail within this handler.
    sqlx::query(
        "INSERT INTO notification.notifications
             (id, event_id, kind, order_id, customer_id, recipient, subject, body, status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(event.event_id)
    .bind(draft.kind)
    .bind(draft.order_id)
    .bind(draft.customer_id)
    .bind(&email)
    .bind(&draft.subject)
    .bind(&body)
    .bind(status)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    if let (Some(mailer), Ok(to)) = (smtp, recipient) {
        mailer
            .send(to, &draft.subject, &body)
            .await
            .map_err(HandleError::Retry)?;
    }
    Ok(())
}

/// `GET /v1/notifications?order_id=&customer_id=`: newest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    order_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    limit: i64,
) -> Result<Value, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        String,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, event_id, kind, order_id, customer_id, recipient, subject, body, status, error, created_at
           FROM notification.notifications
          WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR customer_id = $2)
          ORDER BY created_at DESC, id DESC
          LIMIT $3",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(
            |(
                id,
                event_id,
                kind,
                order_id,
                customer_id,
                recipient,
                subject,
                body,
                status,
                error,
                created_at,
            )| {
                json!({"id": id, "event_id": event_id, "kind": kind, "order_id": order_id,
                       "customer_id": customer_id, "recipient": recipient, "subject": subject,
                       "body": body, "status": status, "error": error, "created_at": created_at})
            },
        )
        .collect();
    Ok(json!({ "items": items }))
}
