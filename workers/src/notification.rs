//! The notification worker: e-mails the customer when an order is placed, shipped or
//! cancelled and when a payment is refunded, over SMTP when one is configured, and records
//! every notification in `notification.notifications` either way (DESIGN.md §6).
//!
//! The order and payment events do not carry the e-mail address, so the worker keeps the
//! recipients it learns from `customer.registered` in `notification.customers`. An event
//! about a customer it does not know yet (redeliveries can reorder messages) is retried.
//!
//! # Once in effect
//!
//! A message is handled in the transaction that also writes its event id into
//! `notification.processed` (see [`crate::consumer`]). The e-mail is sent inside that
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

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use ordo_domain::customer::CustomerRegistered;
use ordo_domain::order::{OrderCancelled, OrderPlaced, OrderShipped};
use ordo_domain::payment::PaymentRefunded;
use ordo_domain::{Amount, Currency};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use url::Url;
use uuid::Uuid;

use crate::consumer::{Delivered, HandleError};
use crate::tls::TrustRoots;
use ordo_domain::event::types;

/// The sender used when `ORDO_SMTP_FROM` is not set.
pub const DEFAULT_FROM: &str = "orders@ordo.invalid";

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://`: plain SMTP, no TLS.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, and no mail without it.
    StartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtps://`: TLS from the first byte (implicit TLS).
    Wrapper,
}

/// What an SMTP URL says. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
struct SmtpTarget {
    host: String,
    port: u16,
    security: Security,
    /// `user:password@`, percent-decoded.
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// An SMTP client, one connection per mail: plain `smtp://host[:port]`, STARTTLS with
/// `smtp://host[:port]?tls=required` (or `opportunistic`), implicit TLS with
/// `smtps://host[:port]`, each with optional `user:password@` (AUTH PLAIN or LOGIN). TLS
/// trusts the webpki roots and the extra roots given (`ORDO_TLS_CA_FILE`).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The URL without its credentials, for `Debug`.
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// `url` like `smtp://127.0.0.1:2525` (see [`Mailer`]); `from` an e-mail address,
    /// optionally with a name (`Ordo <orders@example.com>`). TLS trusts the webpki roots.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        Self::with_roots(url, from, None)
    }

    /// As [`Mailer::new`], TLS trusting `roots` too. Errors never repeat a password.
    pub fn with_roots(url: &str, from: &str, roots: Option<&TrustRoots>) -> Result<Self, String> {
        let target = parse_smtp_url(url)?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("`{from}` is not a sender address: {e}"))?;
        let tls = || {
            let mut params = TlsParameters::builder(target.host.clone());
            for cert in roots.map(TrustRoots::certificates).unwrap_or_default() {
                let cert = Certificate::from_der(cert.to_vec())
                    .map_err(|e| format!("a CA certificate refused by the SMTP client: {e}"))?;
                params = params.add_root_certificate(cert);
            }
            params
                .build_rustls()
                .map_err(|e| format!("cannot set up TLS for SMTP: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
            .port(target.port)
            .timeout(Some(Duration::from_secs(10)));
        builder = match target.security {
            Security::Plain => builder,
            Security::StartTls => builder.tls(Tls::Required(tls()?)),
            Security::Opportunistic => builder.tls(Tls::Opportunistic(tls()?)),
            Security::Wrapper => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let Some((user, password)) = &target.credentials {
            if target.security == Security::Plain {
                tracing::warn!(
                    server = %redact_url(url),
                    "SMTP credentials over plain smtp:// travel unencrypted; use smtps:// or ?tls=required"
                );
            }
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server: redact_url(url),
        })
    }

    async fn send(&self, to: Mailbox, subject: &str, body: &str) -> Result<(), String> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {}", error_chain(&e)))
    }
}

/// lettre's error with its sources ("Connection error: invalid peer certificate: …").
fn error_chain(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `url` with anything between `://` and the last `@` (the credentials) masked; a text
/// that is no URL but holds an `@` is not repeated at all.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => url.to_owned(),
        },
        None if url.contains('@') => "(a text with `@`, not repeated)".to_owned(),
        None => url.to_owned(),
    }
}

fn parse_smtp_url(url: &str) -> Result<SmtpTarget, String> {
    let shown = redact_url(url);
    let invalid = |why: &str| {
        format!(
            "`{shown}` is not an SMTP URL ({why}); expected smtp://host[:port], \
             smtp://host[:port]?tls=required or smtps://host[:port], each with optional user:password@"
        )
    };
    // The parser's messages never quote the input.
    let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
        ("smtp", None) => (Security::Plain, 25),
        ("smtp", Some("required")) => (Security::StartTls, 587),
        ("smtp", Some("opportunistic")) => (Security::Opportunistic, 587),
        ("smtps", None) => (Security::Wrapper, 465),
        ("smtp" | "smtps", Some(_)) => {
            return Err(invalid(
                "tls= is `required` or `opportunistic`, with smtp:// only",
            ))
        }
        _ => return Err(invalid("the scheme is smtp or smtps")),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("no host")),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid("the credentials are not UTF-8"))
    };
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, Some(password)) => Some((decode(user)?, decode(password)?)),
        (_, None) => return Err(invalid("a user without a password")),
    };
    Ok(SmtpTarget {
        host,
        port: parsed.port().unwrap_or(default_port),
        security,
        credentials,
    })
}

fn money(amount: Amount, currency: &Currency) -> String {
    currency.format_minor(amount.get())
}

fn data<T: DeserializeOwned>(event: &Delivered) -> Result<T, HandleError> {
    serde_json::from_value(event.body.clone())
        .map_err(|e| HandleError::Poison(format!("{} body unreadable: {e}", event.event_type)))
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
/// Whether handling `event_type` sends mail: the others only touch this worker's tables
/// (a customer's contact details) or nothing, and can be handled many in one transaction.
pub fn sends_mail(event_type: &str) -> bool {
    matches!(
        event_type,
        types::ORDER_PLACED
            | types::ORDER_SHIPPED
            | types::ORDER_CANCELLED
            | types::PAYMENT_REFUNDED
    )
}

pub async fn handle(
    tx: &mut PgConnection,
    event: &Delivered,
    smtp: Option<&Mailer>,
) -> Result<(), HandleError> {
    let draft = match event.event_type.as_str() {
        types::CUSTOMER_REGISTERED => {
            let e: CustomerRegistered = data(event)?;
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
        types::ORDER_PLACED => placed(&data(event)?),
        types::ORDER_SHIPPED => shipped(&data(event)?),
        types::ORDER_CANCELLED => cancelled(&data(event)?),
        types::PAYMENT_REFUNDED => refunded(&data(event)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        host: &str,
        port: u16,
        security: Security,
        credentials: Option<(&str, &str)>,
    ) -> SmtpTarget {
        SmtpTarget {
            host: host.into(),
            port,
            security,
            credentials: credentials.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn smtp_urls_give_host_port_security_and_credentials() {
        use Security::*;
        let cases = [
            (
                "smtp://127.0.0.1:2525",
                target("127.0.0.1", 2525, Plain, None),
            ),
            (
                "smtp://mail.example.com",
                target("mail.example.com", 25, Plain, None),
            ),
            ("smtp://[::1]:25", target("::1", 25, Plain, None)),
            (
                "smtp://mail.example.com?tls=required",
                target("mail.example.com", 587, StartTls, None),
            ),
            (
                "smtp://u:p@mail.example.com:2587?tls=opportunistic",
                target("mail.example.com", 2587, Opportunistic, Some(("u", "p"))),
            ),
            (
                "smtps://mail.example.com",
                target("mail.example.com", 465, Wrapper, None),
            ),
            (
                "smtps://orders%40shop.example:p%40ss%2Fw@mail.example.com:1465",
                target(
                    "mail.example.com",
                    1465,
                    Wrapper,
                    Some(("orders@shop.example", "p@ss/w")),
                ),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_smtp_url(url), Ok(expected), "{url}");
        }
        for bad in [
            "http://x:25",
            "smtp://x:port",
            "smtp://",
            "smtp://x?tls=maybe",
            "smtps://x?tls=required",
            "smtp://user@x",
            "mail.example.com",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_is_never_repeated_in_errors_or_debug_output() {
        let password = "s3cr3t-pw";
        for url in [
            format!("smtp://user:{password}@x:port"),
            format!("smtp://user:{password}@x?tls=maybe"),
            format!("http://user:{password}@x"),
            format!("user:{password}@x"),
        ] {
            let error = Mailer::new(&url, "orders@ordo.invalid").unwrap_err();
            assert!(!error.contains(password), "{error}");
            assert!(error.contains("not an SMTP URL"), "{error}");
        }
        let url = format!("smtps://user:{password}@mail.example.com");
        let mailer = Mailer::new(&url, "orders@ordo.invalid").unwrap();
        let debug = format!("{mailer:?} {:?}", parse_smtp_url(&url));
        assert!(!debug.contains(password), "{debug}");
        assert!(debug.contains("smtps://***@mail.example.com"), "{debug}");
        assert!(!debug.contains("user"), "{debug}");
    }

    #[test]
    fn a_bad_sender_is_a_clear_error() {
        let error = Mailer::new("smtp://x", "not an address").unwrap_err();
        assert!(error.contains("not a sender address"), "{error}");
    }
}
