//! One leader across processes: the process whose session holds a PostgreSQL advisory lock.
//! The lock lives on a connection of its own, outside any pool, so that it ends exactly when
//! that session does; the leader also writes through it, which proves the lock still holds.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// A held advisory lock, on its own session.
pub struct Lock {
    pub conn: PgConnection,
    key: i64,
}

/// Take the lock `key` if it is free: `None` when another session holds it.
pub async fn try_lock(pool: &PgPool, key: i64) -> Result<Option<Lock>, sqlx::Error> {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let mut conn = PgConnection::connect_with(&options).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if !got {
        let _ = conn.close().await;
        return Ok(None);
    }
    Ok(Some(Lock { conn, key }))
}

impl Lock {
    /// Let the lock go (a standby may lead at once) and close its session.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
