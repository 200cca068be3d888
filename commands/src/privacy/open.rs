//! Opening personal fields for readers: the audit trail, folds, read models and workers.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::keys::KeyState;
use super::seal::{can_change, customer_in, customer_of, open_fields, Mode};
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
    ///
    /// Only the payloads opening can change are parsed into a tree: those of customers
    /// erased or with a data key. The others (every payload when encryption is off and no
    /// one was erased) are only scanned for their customer: parsing every payload into a
    /// tree, which the reader then parses again into its own type, was a twentieth of the
    /// process's CPU with every role.
    pub async fn open_feed_on(
        &self,
        conn: &mut PgConnection,
        events: &mut [crate::feed::FeedEvent],
    ) -> Result<(), sqlx::Error> {
        let named: Vec<(usize, Uuid)> = events
            .iter()
            .enumerate()
            .filter(|(_, event)| !event.payload.is_empty())
            .filter_map(|(i, event)| Some((i, customer_in(&event.event_type, &event.payload)?)))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let mut customers: Vec<Uuid> = named.iter().map(|(_, customer)| *customer).collect();
        customers.sort_unstable();
        customers.dedup();
        let states = self.states_on(conn, &customers).await?;
        for (i, customer) in named {
            let state = states.get(&customer).unwrap_or(&KeyState::None);
            if !can_change(state, Mode::Fold) {
                continue;
            }
            let event = &mut events[i];
            let Ok(mut payload) = serde_json::from_str::<Value>(&event.payload) else {
                continue;
            };
            // A payload opening left as it was keeps its text.
            if open_fields(&event.event_type, &mut payload, customer, state, Mode::Fold) {
                event.payload = payload.to_string();
            }
        }
        Ok(())
    }
}
