use thiserror::Error;

/// A value that cannot exist: the message says why, in words fit for an API client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why the domain refused a command.
///
/// The variants stay distinct all the way to the HTTP edge: `NotFound` is 404,
/// `AlreadyExists` and `Refused` are 409 (the rule names the problem type), `Invalid` is 422.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("{aggregate} not found")]
    NotFound { aggregate: &'static str },
    #[error("{aggregate} already exists")]
    AlreadyExists { aggregate: &'static str },
    /// The current state does not allow the command; `rule` is a stable kebab-case name.
    #[error("{detail}")]
    Refused { rule: &'static str, detail: String },
    /// The command names something the state cannot make sense of (an unknown SKU, say).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl DomainError {
    pub fn refused(rule: &'static str, detail: impl Into<String>) -> Self {
        Self::Refused {
            rule,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
