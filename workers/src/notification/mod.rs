//! The notification worker: e-mails the customer when an order is placed, shipped or
//! cancelled and when a payment is refunded, and records every notification in
//! `notification.notifications` (ADR 0009).
//!
//! The order and payment events do not carry the e-mail address, so the worker keeps the
//! recipients it learns from `customer.registered` in `notification.customers`. An event
//! about a customer it does not know yet (redeliveries can reorder messages) is retried.
//!
//! # Record, acknowledge, send
//!
//! The worker sends nothing: it writes the notification (`pending` when an SMTP server is
//! configured, else `recorded`) in the transaction that records the event as processed,
//! and the message is acknowledged. The mail sender ([`sender::MailSender`]) sends pending
//! notifications with bounded concurrency, records each attempt in `notification.attempts`
//! and retries on the delivery schedule (`crate::retry`); an SMTP outage delays mail and
//! nothing else, and no transaction is open while a mail is sent.
//!
//! # At least once, deduplicable
//!
//! A notification is marked `sent` after the SMTP server accepted it. If the sender dies
//! between the two (or the server accepts and the connection drops before its answer),
//! the lease on the notification runs out and the mail is sent again. Every send of one
//! notification carries the same `Message-ID`, derived from the event and the kind, so
//! providers and mail clients can drop the repeat. No notification is written twice for
//! one event and kind (the processed record), so nothing else repeats.

pub mod drafts;
pub mod recipients;
pub mod sealing;
pub mod sender;

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::Address;
use ordo_commands::privacy::{KeyState, Keyring};
use ordo_domain::customer::{CustomerErased, CustomerRegistered};
use ordo_domain::order::{OrderCancelled, OrderPlaced, OrderShipped};
use ordo_domain::payment::PaymentRefunded;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::jetstream::{Delivered, HandleError, Policy};
pub use crate::mailer::{redact_url, Mailer, DEFAULT_FROM};
use drafts::{cancelled, placed, refunded, shipped, Draft};
use ordo_domain::event::types;
pub use recipients::SKIPPED_ERASED;

pub const NAME: &str = "notification";

/// The mail queue's counts for `GET /v1/workers`: pending, the oldest one's age, sent and
/// failed, without reading the notifications already sent.
pub const QUEUE: &str = include_str!("queue.sql");

/// The notification worker's policy: its effects are rows only (the mail sender sends),
/// so a batch of events is handled in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Notification {
    /// Whether an SMTP server is configured: notifications are then `pending` for the
    /// sender, else only `recorded`.
    mails: bool,
    /// Opens the sealed e-mail and name of `customer.registered` (ADR 0020); without it,
    /// only clear ones are read.
    keys: Option<Keyring>,
}

impl Notification {
    /// `mails`: whether a mail sender will send what this worker records.
    pub fn new(mails: bool) -> Self {
        Self { mails, keys: None }
    }

    /// Open sealed personal fields with these keys.
    pub fn with_keys(mut self, keys: Keyring) -> Self {
        self.keys = Some(keys);
        self
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

    fn check(&self, event: &Delivered) -> Result<(), HandleError> {
        match event.event_type.as_str() {
            types::CUSTOMER_REGISTERED => event.data::<CustomerRegistered>().map(|_| ()),
            types::CUSTOMER_ERASED => event.data::<CustomerErased>().map(|_| ()),
            types::ORDER_PLACED => event.data::<OrderPlaced>().map(|_| ()),
            types::ORDER_SHIPPED => event.data::<OrderShipped>().map(|_| ()),
            types::ORDER_CANCELLED => event.data::<OrderCancelled>().map(|_| ()),
            types::PAYMENT_REFUNDED => event.data::<PaymentRefunded>().map(|_| ()),
            _ => Ok(()),
        }
    }

    async fn handle(
        &self,
        pool: &PgPool,
        tx: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError> {
        let keys = self
            .keys
            .clone()
            .unwrap_or_else(|| Keyring::new(pool.clone(), None));
        // Consecutive notifications are written together; a registration or an erasure
        // first writes those before it, so each event sees the recipients as they were.
        let mut drafts = Vec::new();
        for event in events {
            match event.event_type.as_str() {
                types::CUSTOMER_REGISTERED => {
                    notify(tx, &keys, std::mem::take(&mut drafts), self.mails).await?;
                    recipients::remember(tx, &keys, event).await?;
                }
                types::CUSTOMER_ERASED => {
                    notify(tx, &keys, std::mem::take(&mut drafts), self.mails).await?;
                    recipients::forget(tx, &event.data()?).await?;
                }
                _ => {
                    if let Some(draft) = draft(event)? {
                        drafts.push((*event, draft));
                    }
                }
            }
        }
        notify(tx, &keys, drafts, self.mails).await
    }
}

/// The e-mail an event calls for, if any.
fn draft(event: &Delivered) -> Result<Option<Draft>, HandleError> {
    Ok(Some(match event.event_type.as_str() {
        types::ORDER_PLACED => placed(&event.data()?),
        types::ORDER_SHIPPED => shipped(&event.data()?),
        types::ORDER_CANCELLED => cancelled(&event.data()?),
        types::PAYMENT_REFUNDED => refunded(&event.data()?),
        _ => return Ok(None),
    }))
}

/// Write the notifications of `drafts` to their customers in one statement (after one
/// lookup of their recipients and one of their keys), each recipient and body sealed with
/// the customer's data key when they have one ([`sealing`]). A customer not known yet
/// fails the lot: redelivered, the events are handled one by one.
async fn notify(
    tx: &mut PgConnection,
    keys: &Keyring,
    drafts: Vec<(&Delivered, Draft)>,
    mails: bool,
) -> Result<(), HandleError> {
    if drafts.is_empty() {
        return Ok(());
    }
    let mut customers: Vec<Uuid> = drafts.iter().map(|(_, d)| d.customer_id).collect();
    customers.sort_unstable();
    customers.dedup();
    type Recipient = (Uuid, Option<String>, Option<String>, bool, bool);
    let known: HashMap<Uuid, Recipient> = sqlx::query_as::<_, Recipient>(
        "SELECT customer_id, email, name, erased_at IS NOT NULL, sealed FROM notification.customers
          WHERE customer_id = ANY($1)",
    )
    .bind(&customers)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.0, row))
    .collect();
    let states = sealing::states_on(tx, keys, &customers).await?;
    let mut rows = Rows::default();
    for (event, draft) in drafts {
        let Some((_, email, name, erased, sealed)) = known.get(&draft.customer_id).cloned() else {
            return Err(HandleError::Retry(format!(
                "customer {} not registered yet (customer.registered not handled)",
                draft.customer_id
            )));
        };
        let state = states.get(&draft.customer_id).unwrap_or(&KeyState::None);
        let [email, name] = sealing::open(
            state,
            draft.customer_id,
            sealed,
            [("email", email), ("name", name)],
        );
        let (email, body, status, error) = match (email, name) {
            (Some(email), Some(name)) if !erased => {
                let body = format!("Hello {name},\n\n{}\nOrdo\n", draft.text);
                // An address the SMTP client refuses will be refused on every attempt:
                // recorded as failed rather than retried.
                let refused = email
                    .parse::<Address>()
                    .err()
                    .map(|e| format!("recipient `{email}` refused: {e}"));
                let (status, error) = match (mails, refused) {
                    (false, _) => ("recorded", None),
                    (true, None) => ("pending", None),
                    (true, Some(e)) => ("failed", Some(e)),
                };
                (Some(email), Some(body), status, error)
            }
            _ => {
                let why = if erased {
                    SKIPPED_ERASED
                } else {
                    "the customer's e-mail address cannot be read (its key is not available)"
                };
                (None, None, "skipped", Some(why.to_owned()))
            }
        };
        let [email, body] = sealing::seal(
            state,
            draft.customer_id,
            [("recipient", email.as_deref()), ("body", body.as_deref())],
        );
        rows.id.push(Uuid::now_v7());
        rows.event_id.push(event.event_id);
        rows.kind.push(draft.kind);
        rows.order_id.push(draft.order_id);
        rows.customer_id.push(draft.customer_id);
        rows.recipient.push(email.text);
        rows.subject.push(draft.subject);
        rows.body.push(body.text);
        rows.status.push(status);
        rows.error.push(error);
        rows.channel.push(event.channel.clone());
        rows.sealed.push(email.sealed);
    }
    sqlx::query(
        "INSERT INTO notification.notifications
             (id, event_id, kind, order_id, customer_id, recipient, subject, body, status, error,
              channel, sealed)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::text[], $12::bool[])",
    )
    .bind(rows.id)
    .bind(rows.event_id)
    .bind(rows.kind)
    .bind(rows.order_id)
    .bind(rows.customer_id)
    .bind(rows.recipient)
    .bind(rows.subject)
    .bind(rows.body)
    .bind(rows.status)
    .bind(rows.error)
    .bind(rows.channel)
    .bind(rows.sealed)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The columns of the notifications one statement writes.
#[derive(Default)]
struct Rows {
    id: Vec<Uuid>,
    event_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    order_id: Vec<Uuid>,
    customer_id: Vec<Uuid>,
    recipient: Vec<Option<String>>,
    subject: Vec<String>,
    body: Vec<Option<String>>,
    status: Vec<&'static str>,
    error: Vec<Option<String>>,
    channel: Vec<String>,
    sealed: Vec<bool>,
}

// One type for the row, the JSON answer of `GET /v1/notifications` and the OpenAPI
// document's `Notification`, so that the three cannot drift apart.
/// An e-mail notification about an event, as the notification worker recorded it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Notification)]
pub struct NotificationView {
    pub id: Uuid,
    pub event_id: Uuid,
    /// `order_placed`, `order_shipped`, `order_cancelled` or `payment_refunded`.
    pub kind: String,
    /// The sales channel of the event that caused it.
    pub channel: String,
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// `pending` (the mail sender has yet to send it, or retries it), `sent`, `failed`
    /// (after the last attempt; `error` says why), `recorded` (no SMTP server is configured:
    /// written, never sent) or `skipped` (the customer's e-mail address cannot be read, or
    /// their personal data was erased before it was sent).
    pub status: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Whether `recipient` and `body` are still sealed as the table holds them (ADR 0020):
    /// [`list`] opens them before answering. Never answered.
    #[serde(skip)]
    pub sealed: bool,
}

/// Notifications, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
}

/// The columns of a [`NotificationView`].
const VIEW_COLUMNS: &str = "id, event_id, kind, channel, order_id, customer_id, recipient, subject,
    body, status, error, created_at, sealed";

/// The newest `$1` notifications of an order (`$2`), a customer (`$3`) or a channel (`$4`),
/// each read through its own index.
static FILTERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {VIEW_COLUMNS} FROM notification.notifications
          WHERE ($2::uuid IS NULL OR order_id = $2) AND ($3::uuid IS NULL OR customer_id = $3)
            AND ($4::text IS NULL OR channel = $4)
          ORDER BY created_at DESC, id DESC
          LIMIT $1"
    )
});

/// The newest `$1` notifications of every channel: each channel's newest through
/// `notifications_by_channel`, merged (`newest_of_each`); `FILTERED` without a filter
/// sorted the whole table (0.8 s at two million).
pub static NEWEST: LazyLock<String> = LazyLock::new(|| {
    crate::newest::newest_of_each("notification.notifications", "channel", VIEW_COLUMNS, "$1")
});

/// `GET /v1/notifications?order_id=&customer_id=`: newest first, at most `limit`, of one
/// channel or (with `None`) of every channel; sealed recipients and bodies opened with
/// `keys` (one key lookup for the page), null where they no longer open.
pub async fn list(
    pool: &PgPool,
    keys: &Keyring,
    channel: Option<&str>,
    order_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    limit: i64,
) -> Result<NotificationList, sqlx::Error> {
    let query = if channel.is_none() && order_id.is_none() && customer_id.is_none() {
        sqlx::query_as(&NEWEST).bind(limit)
    } else {
        sqlx::query_as(&FILTERED)
            .bind(limit)
            .bind(order_id)
            .bind(customer_id)
            .bind(channel)
    };
    let mut items: Vec<NotificationView> = query.fetch_all(pool).await?;
    let states = sealing::states(
        keys,
        items
            .iter()
            .filter(|n| n.sealed)
            .filter_map(|n| n.customer_id),
    )
    .await?;
    for n in items.iter_mut().filter(|n| n.sealed) {
        let opened = match n.customer_id.and_then(|c| states.get(&c).map(|s| (c, s))) {
            Some((customer, state)) => sealing::open(
                state,
                customer,
                true,
                [("recipient", n.recipient.take()), ("body", n.body.take())],
            ),
            None => [None, None],
        };
        [n.recipient, n.body] = opened;
        n.sealed = false;
    }
    Ok(NotificationList { items })
}
