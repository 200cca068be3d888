//! The workers Ordo runs (notification, analytics, integration): the one place that lists
//! them, for configuration, operations and the CLI. Each states its policy in its own
//! module; the JetStream machinery (`crate::jetstream`) knows none of them.

use std::sync::Arc;

use crate::jetstream::Policy;
use crate::{analytics, integration, notification};

/// The workers. A closed set; each has its own schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Analytics,
    Integration,
    Notification,
}

impl Worker {
    pub const ALL: [Worker; 3] = [Worker::Notification, Worker::Analytics, Worker::Integration];

    /// Whether an operator may ask for its effects again (`replay --reprocess`): e-mails
    /// and webhooks can be sent twice on purpose; analytics' sums cannot be counted twice.
    pub fn effects_can_repeat(self) -> bool {
        matches!(self, Self::Notification | Self::Integration)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Analytics => analytics::NAME,
            Self::Integration => integration::NAME,
            Self::Notification => notification::NAME,
        }
    }

    pub(crate) fn processed_table(self) -> &'static str {
        self.policy().processed_table()
    }

    /// The worker's policy with default outbound clients (no SMTP server: mail is only
    /// recorded; webhooks trust the webpki roots).
    pub fn policy(self) -> Arc<dyn Policy> {
        match self {
            Self::Analytics => Arc::new(analytics::Analytics),
            Self::Integration => Arc::new(integration::Integration::default()),
            Self::Notification => Arc::new(notification::Notification::default()),
        }
    }
}

impl From<Worker> for Arc<dyn Policy> {
    fn from(worker: Worker) -> Self {
        worker.policy()
    }
}
