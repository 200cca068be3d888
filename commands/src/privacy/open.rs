//! Opening personal fields for readers: the audit trail, folds, read models and workers.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::keys::KeyState;
use super::seal::{customer_of, open_fields, Mode};
use super::Keyring;

impl Keyring {
    /// Open the personal fields of event payloads (`(event_type, payload)`) for a reader.
    pub async fn open(
        &self,
        events: &mut [(&str, &mut Value)],
        mode: Mode,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.open_on(&mut conn, events, mode).await
    }

    /// [`Keyring::open`] on a connection (or transaction) the caller holds.
    pub async fn open_on(
        &self,
        conn: &mut PgConnection,
        events: &mut [(&str, &mut Value)],
        mode: Mode,
    ) -> Result<(), sqlx::Error> {
        self.open_each_on(conn, events, mode).await.map(drop)
    }

    /// [`Keyring::open_on`]; for each payload, whether opening changed it.
    async fn open_each_on(
        &self,
        conn: &mut PgConnection,
        events: &mut [(&str, &mut Value)],
        mode: Mode,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let mut customers: Vec<Uuid> = events
            .iter()
            .filter_map(|(event_type, payload)| customer_of(event_type, payload))
            .collect();
        if customers.is_empty() {
            return Ok(vec![false; events.len()]);
        }
        customers.sort_unstable();
        customers.dedup();
        let states = self.states_on(conn, &customers).await?;
        Ok(events
            .iter_mut()
            .map(|(event_type, payload)| {
                customer_of(event_type, payload).is_some_and(|customer| {
                    let state = states.get(&customer).unwrap_or(&KeyState::None);
                    open_fields(event_type, payload, customer, state, mode)
                })
            })
            .collect())
    }

    /// Open the personal fields of feed events (for read models: [`Mode::Fold`]). Payloads
    /// that do not parse are left as they are, for the reader's decoding to report.
    pub async fn open_feed_on(
        &self,
        conn: &mut PgConnection,
        events: &mut [crate::feed::FeedEvent],
    ) -> Result<(), sqlx::Error> {
        let mut parsed: Vec<(usize, Value)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if event.payload.is_empty()
                || ordo_domain::personal::personal_fields(&event.event_type).is_empty()
            {
                continue;
            }
            if let Ok(payload) = serde_json::from_str(&event.payload) {
                parsed.push((i, payload));
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let mut payloads: Vec<(&str, &mut Value)> = parsed
            .iter_mut()
            .map(|(i, payload)| (events[*i].event_type.as_str(), payload))
            .collect();
        let changed = self.open_each_on(conn, &mut payloads, Mode::Fold).await?;
        // A payload opening left as it was (nothing sealed, its customer not erased) keeps
        // its text: writing every one out again was a twentieth of the projector's CPU.
        for ((i, payload), changed) in parsed.into_iter().zip(changed) {
            if changed {
                events[i].payload = payload.to_string();
            }
        }
        Ok(())
    }
}
