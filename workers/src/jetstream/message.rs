//! Reading a message: the event it carries, from its subject, headers and body.

use async_nats::HeaderMap;
use bytes::Bytes;
use ordo_commands::feed::FeedEvent;
use ordo_runtime::telemetry;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::policy::HandleError;
use crate::relay::header;

/// An event as a worker receives it, from the message's headers and body.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub position: i64,
    pub body: Body,
    /// The W3C trace context the event was recorded under (the `traceparent` header).
    pub traceparent: Option<String>,
    /// The sales channel of the event's stream (the `ce-ordochannel` header; `default` for
    /// a message relayed before channels existed).
    pub channel: String,
}

/// An event's data: the message's JSON as it came, read only into what a handler asks
/// for (three workers each building a JSON tree of every message was a twentieth of the
/// process's CPU), or a tree (recomputed from the log, or with personal fields opened).
#[derive(Debug, Clone)]
pub enum Body {
    Json(Bytes),
    Value(Value),
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Self::Value(value)
    }
}

impl Delivered {
    /// The event's data as `T`; a body that does not read as `T` never will (poison).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, HandleError> {
        match &self.body {
            Body::Json(json) => serde_json::from_slice(json),
            Body::Value(value) => T::deserialize(value),
        }
        .map_err(|e| HandleError::Poison(format!("{} body unreadable: {e}", self.event_type)))
    }

    /// The event's data as a JSON tree.
    pub fn value(&self) -> Result<Value, HandleError> {
        match &self.body {
            Body::Value(value) => Ok(value.clone()),
            Body::Json(_) => self.data(),
        }
    }

    /// The event as the relay would publish it, read from the log instead (a recompute on
    /// the bulk path): the same body, position and channel. A payload that is not a JSON
    /// object gets a `null` body, which no handler reads (the live worker dead-letters it).
    pub fn from_feed(event: FeedEvent) -> Self {
        Self {
            body: Body::Value(crate::relay::fields(&event.payload).unwrap_or(Value::Null)),
            event_id: event.event_id,
            event_type: event.event_type,
            aggregate_id: event.aggregate_id,
            position: event.checkpoint.global_position,
            traceparent: None,
            channel: event.channel,
        }
    }

    /// The span a handler runs in: a child of the request that recorded the event, so one
    /// trace runs from that request to this handler's effects.
    pub(super) fn span(&self, worker: &'static str) -> tracing::Span {
        let span = tracing::info_span!(
            "worker.handle",
            worker,
            event.id = %self.event_id,
            event.r#type = %self.event_type,
            event.position = self.position,
            attempt = tracing::field::Empty,
        );
        if let Some(traceparent) = &self.traceparent {
            telemetry::continue_trace(&span, traceparent);
        }
        span
    }
}

/// The event id a message carries (`ce-id`).
pub(super) fn event_id_in(headers: Option<&HeaderMap>) -> Option<Uuid> {
    headers
        .and_then(|h| h.get(header("ce-id")))
        .and_then(|v| Uuid::parse_str(v.as_str()).ok())
}

/// The event of a message on `<prefix>.<event type>`, or why it cannot be read (a poison
/// message).
pub(super) fn delivered(
    headers: Option<&HeaderMap>,
    subject: &str,
    prefix: &str,
    payload: &Bytes,
) -> Result<Delivered, String> {
    let text = |name: &'static str| {
        headers
            .and_then(|h| h.get(header(name)))
            .map(|v| v.as_str().to_owned())
    };
    let event_id = event_id_in(headers).ok_or("no ce-id header with an event id")?;
    let event_type = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
        .ok_or("subject outside the event stream")?
        .to_owned();
    // Checked here (a body that is not JSON is poison for every worker), read later.
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map_err(|e| format!("body is not JSON: {e}"))?;
    Ok(Delivered {
        event_id,
        event_type,
        aggregate_id: text("ce-subject").unwrap_or_default(),
        position: text("ordo-position")
            .and_then(|p| p.parse().ok())
            .unwrap_or_default(),
        body: Body::Json(payload.clone()),
        traceparent: text("traceparent"),
        channel: text(crate::relay::CHANNEL_HEADER)
            .unwrap_or_else(|| ordo_commands::channels::DEFAULT.to_owned()),
    })
}

/// A message's headers as a JSON object (one string per header, the first value).
pub fn headers_json(headers: Option<&HeaderMap>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            if let Some(value) = values.first() {
                out.insert(name.to_string(), Value::String(value.as_str().to_owned()));
            }
        }
    }
    Value::Object(out)
}
