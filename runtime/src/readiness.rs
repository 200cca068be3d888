//! What `/readyz` looks at besides PostgreSQL (the pool): a probe of NATS, and the process
//! roles this process runs ([`crate::process`]).

use crate::process::ProcessRoles;

/// A NATS connection kept only to report whether the server is reachable.
#[derive(Debug, Clone)]
pub struct NatsProbe {
    pub client: async_nats::Client,
    /// Whether this process needs NATS to be ready (it runs the relay or workers). The API
    /// alone does not: commands keep working while NATS is down.
    pub required: bool,
}

impl NatsProbe {
    /// Connects in the background (and reconnects for ever); never fails or waits.
    pub async fn start(url: &str, required: bool) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await?;
        Ok(Self { client, required })
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Everything `/readyz` looks at besides the database pool.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub roles: ProcessRoles,
    /// `None` when this process was built without one (then NATS is not reported).
    pub nats: Option<NatsProbe>,
}
