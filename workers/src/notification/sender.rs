//! The mail sender: sends the pending notifications, records each attempt.
//!
//! A round leases what is due (one statement, `FOR UPDATE SKIP LOCKED` inside it, so two
//! senders never take one notification), sends each on its own task, at most `concurrency`
//! at once, with no transaction open, and records the attempt and the outcome (`sent`, the
//! next attempt on the retry schedule, or `failed` after the last) in one short
//! transaction. An SMTP outage fills the attempts table and delays mail; nothing else.
//!
//! At least once: a sender that dies after the server accepted a mail and before the
//! record leaves a lease that runs out, and the mail is sent again, with the same
//! `Message-ID` (see the module above).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::Address;
use ordo_commands::privacy::{KeyState, Keyring};
use ordo_runtime::process::every;
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::sealing;
use crate::mailer::Mailer;
use crate::retry::RetrySchedule;

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// Mails sent at once.
    pub concurrency: usize,
    /// How often pending notifications are looked for when the last round found none.
    pub poll: Duration,
    pub schedule: RetrySchedule,
    /// How long a claimed notification is someone else's: longer than a send may take
    /// (the SMTP client's timeout is 10 s).
    pub lease: Duration,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll: Duration::from_millis(200),
            schedule: RetrySchedule::default(),
            lease: Duration::from_secs(60),
        }
    }
}

/// A claimed notification: its recipient, name and body as stored until
/// [`MailSender::claim`] opens them.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    event_id: Uuid,
    kind: String,
    customer_id: Option<Uuid>,
    recipient: Option<String>,
    name: Option<String>,
    subject: String,
    body: Option<String>,
    /// The recipient and body are sealed (ADR 0020).
    sealed: bool,
    /// The name is sealed.
    name_sealed: Option<bool>,
    /// This attempt's number (from 1).
    attempts: i32,
    /// The sales channel of the event that caused it: its sender, if it has its own.
    channel: String,
}

pub struct MailSender {
    pool: PgPool,
    /// Opens the sealed recipients, names and bodies (ADR 0020).
    keys: Keyring,
    mailer: Mailer,
    config: MailConfig,
    slots: Arc<Semaphore>,
}

impl MailSender {
    /// A sender over `keys`' database, opening sealed recipients with them.
    pub fn new(keys: Keyring, mailer: Mailer, config: MailConfig) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Arc::new(Self {
            pool: keys.pool().clone(),
            keys,
            mailer,
            config,
            slots,
        })
    }

    /// Send until `shutdown` turns true; then finish the mails in flight.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        // The claim takes the oldest due mails by `notifications_pending` in order only when
        // the planner knows the table's size.
        let statistics = tokio::spawn(ordo_commands::db::keep_analyzed(
            self.pool.clone(),
            "notification.notifications",
            Duration::from_secs(5),
            shutdown.clone(),
        ));
        // The gauges count the pending mails, in a task of their own so that the claims go
        // on while a large backlog is counted.
        let pool = self.pool.clone();
        let gauges = tokio::spawn(every(Duration::from_secs(5), shutdown.clone(), move || {
            Self::export_gauges(pool.clone())
        }));
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim notifications to send");
                    Vec::new()
                }
            };
            let found = !claimed.is_empty();
            for notification in claimed {
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                tasks.spawn(async move {
                    this.send(notification).await;
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll), if !found => {}
                Some(_) = tasks.join_next(), if found && !tasks.is_empty() => {}
                _ = tokio::time::sleep(self.config.poll / 4), if found => {}
                _ = shutdown.changed() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        let _ = statistics.await;
        let _ = gauges.await;
    }

    /// One round, for tests: claim what is due, send and record it all. Returns how many
    /// mails were attempted.
    pub async fn step(&self) -> Result<usize, sqlx::Error> {
        let claimed = self.claim().await?;
        let n = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|c| self.send(c))).await;
        Ok(n)
    }

    /// Lease what is due and open the sealed values, one key lookup for the round.
    async fn claim(&self) -> Result<Vec<Claimed>, sqlx::Error> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(Vec::new());
        }
        let mut claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE notification.notifications n
                SET leased_until = now() + make_interval(secs => $2), attempts = n.attempts + 1
               FROM (SELECT id FROM notification.notifications
                      WHERE status = 'pending' AND next_attempt_at <= now()
                        AND (leased_until IS NULL OR leased_until <= now())
                      ORDER BY next_attempt_at, id LIMIT $1
                      FOR UPDATE SKIP LOCKED) due
              WHERE n.id = due.id
          RETURNING n.id, n.event_id, n.kind, n.customer_id, n.recipient,
                    (SELECT c.name FROM notification.customers c WHERE c.customer_id = n.customer_id)
                      AS name,
                    (SELECT c.sealed FROM notification.customers c
                      WHERE c.customer_id = n.customer_id) AS name_sealed,
                    n.subject, n.body, n.sealed, n.attempts, n.channel",
        )
        .bind(i64::try_from(free).unwrap_or(i64::MAX))
        .bind(self.config.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let states = sealing::states(
            &self.keys,
            claimed
                .iter()
                .filter(|c| c.sealed || c.name_sealed == Some(true))
                .filter_map(|c| c.customer_id),
        )
        .await?;
        for c in &mut claimed {
            let Some(customer) = c.customer_id else {
                continue;
            };
            let state = states.get(&customer).unwrap_or(&KeyState::None);
            [c.recipient, c.body] = sealing::open(
                state,
                customer,
                c.sealed,
                [("recipient", c.recipient.take()), ("body", c.body.take())],
            );
            [c.name] = sealing::open(
                state,
                customer,
                c.name_sealed == Some(true),
                [("name", c.name.take())],
            );
        }
        Ok(claimed)
    }

    async fn send(&self, n: Claimed) {
        let message_id = self.mailer.message_id(n.event_id, &n.kind);
        let started = Instant::now();
        let outcome = match (&n.recipient, &n.body) {
            (Some(recipient), Some(body)) => {
                match (
                    recipient.parse::<Address>(),
                    self.sender_of(&n.channel).await,
                ) {
                    (Ok(address), Ok(from)) => {
                        let to = Mailbox::new(n.name.clone(), address);
                        self.mailer
                            .send(from.as_ref(), to, &n.subject, body, &message_id)
                            .await
                    }
                    (Err(e), _) => Err(format!("recipient `{recipient}` refused: {e}")),
                    (_, Err(e)) => Err(e),
                }
            }
            // Erased since it was written, or its key is not available to this process.
            _ => Err(
                "the recipient or the body cannot be read (the customer was erased, or \
                      their data key is not available)"
                    .to_owned(),
            ),
        };
        let elapsed = started.elapsed();
        metrics::counter!("ordo_mail_attempts_total",
            "outcome" => if outcome.is_ok() { "ok" } else { "failed" })
        .increment(1);
        if let Err(e) = self.record(&n, &message_id, outcome.err(), elapsed).await {
            // The lease runs out and the mail is tried again.
            tracing::warn!(notification.id = %n.id, error = %e, "cannot record a mail attempt");
        }
    }

    /// The sender of `channel`'s mail when it has one of its own (`None`: the configured
    /// sender). Read per mail, so a change applies to the next mail sent.
    async fn sender_of(&self, channel: &str) -> Result<Option<Mailbox>, String> {
        let channel = ordo_commands::channels::get(&self.pool, channel)
            .await
            .map_err(|e| format!("cannot read the channel's sender: {e}"))?;
        let Some(channel) = channel else {
            return Ok(None);
        };
        let Some(address) = channel.email_from_address else {
            return Ok(None);
        };
        let address = address
            .parse::<Address>()
            .map_err(|e| format!("the channel's sender `{address}` is refused: {e}"))?;
        Ok(Some(Mailbox::new(channel.email_from_name, address)))
    }

    /// The attempt and what follows from it, in one short transaction.
    async fn record(
        &self,
        n: &Claimed,
        message_id: &str,
        error: Option<String>,
        elapsed: Duration,
    ) -> Result<(), sqlx::Error> {
        let retry_in = match error {
            None => None,
            Some(_) => self
                .config
                .schedule
                .delay_after(u32::try_from(n.attempts).unwrap_or(1)),
        };
        let status = match (&error, retry_in) {
            (None, _) => "sent",
            (Some(_), Some(_)) => "pending",
            (Some(_), None) => "failed",
        };
        let mut tx = ordo_commands::db::begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO notification.attempts (id, notification_id, attempt, ok, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(n.id)
        .bind(n.attempts)
        .bind(error.is_none())
        .bind(&error)
        .bind(i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notification.notifications
                SET status = $2, error = $3, message_id = $4, leased_until = NULL,
                    next_attempt_at = now() + make_interval(secs => $5),
                    sent_at = CASE WHEN $2 = 'sent' THEN now() END
              WHERE id = $1",
        )
        .bind(n.id)
        .bind(status)
        .bind(&error)
        .bind(message_id)
        .bind(retry_in.unwrap_or_default().as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Notifications pending and the oldest one's age.
    async fn export_gauges(pool: PgPool) {
        let row: Result<(i64, f64), sqlx::Error> = sqlx::query_as(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
               FROM notification.notifications WHERE status = 'pending'",
        )
        .fetch_one(&pool)
        .await;
        if let Ok((pending, oldest)) = row {
            metrics::gauge!("ordo_mail_queue_depth").set(pending as f64);
            metrics::gauge!("ordo_mail_oldest_pending_seconds").set(oldest);
        }
    }
}
