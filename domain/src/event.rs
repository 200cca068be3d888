//! What every event type shares: a stable dotted name and a schema version.
//!
//! The name (`order.placed`) is the `event_type` column, the NATS subject suffix and the
//! webhook event type. The version starts at 1 and only grows; a stored event of an older
//! version is upcast on read, before it reaches a fold.

/// Implemented by each aggregate's event enum.
pub trait EventName {
    /// `aggregate.event`, e.g. `order.placed`.
    fn name(&self) -> &'static str;

    /// The schema version this code writes.
    fn schema_version(&self) -> u32 {
        1
    }
}
