//! Configuration from the environment (DESIGN.md §7); every variable is also a flag.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL; the database is created and migrated on start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ordo"
    )]
    pub database_url: String,

    /// NATS with JetStream (used by the relay and workers).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Where the HTTP API listens.
    #[arg(long, env = "ORDO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "ORDO_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Seconds a request waits for a database connection before answering 503.
    #[arg(long, env = "ORDO_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub db_acquire_timeout_secs: u64,

    /// Largest accepted request body in bytes; larger ones get 413.
    #[arg(long, env = "ORDO_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Test-only fault injection: abort right after a command with an Idempotency-Key
    /// commits, before its answer is stored or sent.
    #[arg(
        long,
        env = "ORDO_TEST_CRASH_AFTER_COMMIT",
        hide = true,
        default_value_t = false
    )]
    pub crash_after_commit: bool,
}

impl Config {
    /// The defaults, as if no variable were set (tests start from here).
    pub fn defaults() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/ordo".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db_max_connections: 32,
            db_acquire_timeout_secs: 3,
            body_limit: 64 * 1024,
            crash_after_commit: false,
        }
    }
}
