//! Sales channels: the registry of channel ids (schema `channels`) and the channel of a
//! stream. A channel is one storefront's world: every stream belongs to the channel its
//! first event was recorded in (`channel` in that event's metadata; events recorded before
//! channels existed belong to [`DEFAULT`]), and so does every later event of the stream.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// The channel every deployment has, and the one everything recorded before channels
/// existed belongs to.
pub const DEFAULT: &str = "default";

/// The longest channel id.
pub const MAX_ID_LEN: usize = 63;

/// The longest channel name.
pub const MAX_NAME_LEN: usize = 200;

/// A channel id: a lowercase slug — `a`–`z`, `0`–`9` and `-`, starting with a letter or a
/// digit, at most [`MAX_ID_LEN`] characters. It appears in URLs, NATS headers and metrics
/// labels, so it is kept to characters that need no escaping anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ChannelId(String);

impl ChannelId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_start = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_rest = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if raw.is_empty() || raw.len() > MAX_ID_LEN || !valid_start || !valid_rest {
            return Err(format!(
                "must be a lowercase slug: a-z, 0-9 and '-', starting with a letter or digit, 1 to {MAX_ID_LEN} characters"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn default_channel() -> Self {
        Self(DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for ChannelId {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A sales channel's id: a-z, 0-9 and `-`, starting with a letter or digit, 1 to \
                 63 characters.",
            ))
            .pattern(Some("^[a-z0-9][a-z0-9-]{0,62}$"))
            .examples([DEFAULT]);
        RefOr::T(Schema::Object(schema.build()))
    }
}

impl utoipa::ToSchema for ChannelId {}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `raw` may be a channel's e-mail sender address.
pub fn valid_sender_address(raw: &str) -> bool {
    ordo_domain::values::Email::parse(raw).is_ok()
}

/// A channel as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Channel {
    pub id: String,
    pub name: String,
    /// The sender of this channel's e-mail; `None`: the configured sender.
    pub email_from_address: Option<String>,
    pub email_from_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, email_from_address, email_from_name, created_at, updated_at";

/// Create channel `id`; `None` if it exists already.
pub async fn create(
    pool: &PgPool,
    id: &ChannelId,
    name: &str,
) -> Result<Option<Channel>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO channels.channels (id, name) VALUES ($1, $2)
         ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(id.as_str())
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// Every channel, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<Channel>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM channels.channels ORDER BY id"
    ))
    .fetch_all(pool)
    .await
}

/// Channel `id`, if it exists.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Channel>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM channels.channels WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Whether channel `id` exists.
pub async fn exists(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    Ok(get(pool, id).await?.is_some())
}

/// What an update changes; `None` leaves a field as it is. The sender fields take
/// `Some(None)` to fall back to the configured sender.
#[derive(Debug, Clone, Default)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    pub email_from_address: Option<Option<String>>,
    pub email_from_name: Option<Option<String>>,
}

/// Update channel `id`; `None` if it does not exist.
pub async fn update(
    pool: &PgPool,
    id: &str,
    update: &ChannelUpdate,
) -> Result<Option<Channel>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE channels.channels
            SET name = coalesce($2, name),
                email_from_address = CASE WHEN $3 THEN $4 ELSE email_from_address END,
                email_from_name = CASE WHEN $5 THEN $6 ELSE email_from_name END,
                updated_at = now()
          WHERE id = $1
      RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(update.name.as_deref())
    .bind(update.email_from_address.is_some())
    .bind(update.email_from_address.clone().flatten())
    .bind(update.email_from_name.is_some())
    .bind(update.email_from_name.clone().flatten())
    .fetch_optional(pool)
    .await
}

/// The channel of stream `aggregate_type`/`id`: the one its first event was recorded in;
/// `None` while the stream has no events.
pub async fn of_stream(
    pool: &PgPool,
    aggregate_type: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(metadata ->> 'channel', 'default') FROM event_store.events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(aggregate_type)
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_lowercase_slugs_of_bounded_length() {
        for good in ["default", "eu-web", "pos1", "0", &"a".repeat(MAX_ID_LEN)] {
            assert!(ChannelId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-eu",
            "EU",
            "eu_web",
            "eu web",
            "eu/web",
            "é",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(ChannelId::parse(bad).is_err(), "{bad}");
        }
    }
}
