//! Where the log stands, for readers that must tell "not yet" from "never".

use sqlx::PgPool;

/// Whether a committed event has `global_position`. A reader waiting for a position that
/// none has (beyond the log's head, or a number the sequence skipped) would wait in vain,
/// so it is refused at once instead. Positions are handed out only to events that then
/// commit, or never; a position a command answered with is always committed.
pub async fn committed(pool: &PgPool, global_position: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM event_store.events WHERE global_position = $1)",
    )
    .bind(global_position)
    .fetch_one(pool)
    .await
}
