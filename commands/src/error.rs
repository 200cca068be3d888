use ordo_domain::DomainError;
use thiserror::Error;

/// Why a command did not produce events. "Refused by the domain", "conflict" and "could not
/// record" stay apart so the HTTP edge can answer 409/422/404, 409/412 and 503 respectively.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// `If-Match` named a version the stream has moved past (or not reached).
    #[error("expected version {expected}, the stream is at {actual}")]
    VersionMismatch { expected: u64, actual: u64 },
    /// Concurrent writers kept winning; retrying internally did not help.
    #[error("the stream was changed concurrently; retry the command")]
    Conflict,
    /// The request's `Idempotency-Key` was answered meanwhile (by a duplicate that another
    /// process committed first); nothing was written.
    #[error("this idempotency key was answered meanwhile")]
    Answered(crate::appender::StoredAnswer),
    /// A duplicate with the same `Idempotency-Key` is being appended right now.
    #[error("a request with this idempotency key is in flight")]
    InFlight,
    /// The event store could not be reached.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CommandError {
    /// The `outcome` label of `ordo_commands_total` for a command that failed this way.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Domain(DomainError::Invalid { .. }) => "invalid",
            Self::Domain(_) => "rejected",
            Self::VersionMismatch { .. } | Self::Conflict | Self::InFlight => "conflict",
            Self::Answered(_) => "replayed",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "error",
        }
    }

    /// Classify a database error: lost connections and pool time-outs are `Unavailable`.
    pub fn from_sqlx(err: &sqlx::Error) -> Self {
        if is_unavailable(err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(err: sqlx::Error) -> Self {
        Self::from_sqlx(&err)
    }
}

/// Whether a database error means PostgreSQL could not be reached (rather than a bug or bad data).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        // A connection cut mid-handshake surfaces as a protocol error.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // The server is shutting down or refusing new connections (class 57, 08).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57") || c.starts_with("08")),
        _ => false,
    }
}

impl From<cqrs_es::AggregateError<DomainError>> for CommandError {
    fn from(err: cqrs_es::AggregateError<DomainError>) -> Self {
        use cqrs_es::AggregateError as E;
        match err {
            E::UserError(e) => Self::Domain(e),
            E::AggregateConflict => Self::Conflict,
            E::DatabaseConnectionError(e) => Self::Unavailable(e.to_string()),
            E::DeserializationError(e) => Self::Internal(format!("stored event unreadable: {e}")),
            E::UnexpectedError(e) => match e.downcast_ref::<sqlx::Error>() {
                Some(sqlx_err) => Self::from_sqlx(sqlx_err),
                None => Self::Internal(e.to_string()),
            },
        }
    }
}
