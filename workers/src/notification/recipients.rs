//! The recipients the notification worker keeps: learnt from `customer.registered` (its
//! sealed e-mail and name opened through the key store), forgotten on `customer.erased`.
//! They are kept sealed again with the customer's data key whenever the customer has one
//! (ADR 0020, [`super::sealing`]).

use ordo_commands::privacy::{Keyring, Mode};
use ordo_domain::customer::{CustomerErased, CustomerRegistered};
use ordo_domain::personal::Personal;
use ordo_domain::values::{Email, Text};
use sqlx::PgConnection;

use crate::jetstream::{Delivered, HandleError};

/// Keep the recipient of a `customer.registered`, its e-mail and name opened through the
/// key store and sealed for the table. A customer erased meanwhile (or whose key this
/// process cannot unwrap) is remembered without them: nothing will be mailed to them.
pub(super) async fn remember(
    tx: &mut PgConnection,
    keys: &Keyring,
    event: &Delivered,
) -> Result<(), HandleError> {
    let mut body = event.value()?;
    keys.open_on(
        &mut *tx,
        &mut [(event.event_type.as_str(), &mut body)],
        Mode::Fold,
    )
    .await?;
    let e: CustomerRegistered = serde_json::from_value(body)
        .map_err(|e| HandleError::Poison(format!("{} body unreadable: {e}", event.event_type)))?;
    let erased = matches!(&e.email, Personal::Sealed(s) if s.is_withheld());
    let state = super::sealing::state(tx, keys, e.customer_id).await?;
    let [email, name] = super::sealing::seal(
        &state,
        e.customer_id,
        [
            ("email", e.email.clear().map(Email::as_str)),
            ("name", e.name.clear().map(Text::as_str)),
        ],
    );
    sqlx::query(
        "INSERT INTO notification.customers (customer_id, email, name, erased_at, sealed)
         VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END, $5)
         ON CONFLICT (customer_id) DO UPDATE
            SET email = EXCLUDED.email, name = EXCLUDED.name, erased_at = EXCLUDED.erased_at,
                sealed = EXCLUDED.sealed
          WHERE notification.customers.erased_at IS NULL",
    )
    .bind(e.customer_id)
    .bind(email.text)
    .bind(name.text)
    .bind(erased)
    .bind(email.sealed)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// `customer.erased`: forget the customer's address and name, and drop them from their
/// notifications; those not sent yet are `skipped`.
pub(super) async fn forget(tx: &mut PgConnection, e: &CustomerErased) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO notification.customers (customer_id, email, name, erased_at)
         VALUES ($1, NULL, NULL, $2)
         ON CONFLICT (customer_id) DO UPDATE
            SET email = NULL, name = NULL, erased_at = $2, sealed = false",
    )
    .bind(e.customer_id)
    .bind(e.erased_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE notification.notifications
            SET recipient = NULL, body = NULL, sealed = false,
                status = CASE WHEN status = 'pending' THEN 'skipped' ELSE status END,
                error = CASE WHEN status = 'pending' THEN $2 ELSE error END
          WHERE customer_id = $1",
    )
    .bind(e.customer_id)
    .bind(SKIPPED_ERASED)
    .execute(&mut *tx)
    .await?;
    // Refusals recorded by the sender may quote the address.
    sqlx::query(
        "UPDATE notification.attempts SET error = NULL
          WHERE notification_id IN (SELECT id FROM notification.notifications WHERE customer_id = $1)",
    )
    .bind(e.customer_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Why a notification to an erased customer is `skipped`.
pub const SKIPPED_ERASED: &str = "the customer's personal data was erased";
