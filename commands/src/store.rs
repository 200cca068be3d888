//! The PostgreSQL event store on `event_store.events`: streams load through cqrs-es's
//! `PersistedEventStore` in event-store mode over postgres-es (one per aggregate, with the
//! upcasters); commands are decided on cqrs-es aggregates and their events written by the
//! group-commit [`Appender`] (postgres-es writes one transaction per command, the limit this
//! store was built to pass).

use std::future::Future;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventStore as _};
use ordo_domain::customer::{Customer, CustomerCommand};
use ordo_domain::order::{Order, OrderCommand};
use ordo_domain::payment::{Payment, PaymentCommand};
use ordo_domain::DomainError;
use postgres_es::PostgresEventRepository;
use serde::Serialize;
use sqlx::PgPool;

use crate::appender::{
    Answer, Append, Appended, Appender, NewEvent, PaymentCap, StoredAnswer, StreamVersion,
};
use crate::feed::KnownHead;
use crate::{CommandError, CommandMetadata};

pub const EVENTS_TABLE: &str = "event_store.events";
const SNAPSHOTS_TABLE: &str = "event_store.snapshots";

/// How often a command is re-decided after losing a write race, when the caller did not
/// pin a version with `If-Match`.
const MAX_ATTEMPTS: u32 = 5;

type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

/// The result of a command: the stream version after it and the global position of its
/// last event. This is the body of every command response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Committed {
    pub id: String,
    pub version: u64,
    pub position: i64,
}

/// What a command's decision relied on besides its own stream, which the appender checks
/// under the commit point.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Streams it read facts from, at the versions it read.
    pub reads: Vec<StreamVersion>,
    /// The cap of the payment it creates, if it creates one.
    pub payment_cap: Option<PaymentCap>,
}

impl From<Vec<StreamVersion>> for Facts {
    fn from(reads: Vec<StreamVersion>) -> Self {
        Self {
            reads,
            payment_cap: None,
        }
    }
}

/// An aggregate's state with the version (last sequence) it was folded to.
#[derive(Debug, Clone)]
pub struct Versioned<A> {
    pub state: A,
    pub version: u64,
}

/// The aggregates this store holds, and where each one's cqrs-es store is.
pub trait Stored: Aggregate<Error = DomainError, Services = ()>
where
    Self::Command: Clone,
{
    fn store(store: &EventStore) -> &Store<Self>;

    /// Whether the command creates its stream (the first attempt need not load it).
    fn creates(command: &Self::Command) -> bool;

    /// The command's name in metrics and spans (`place_order`): a closed set, so a bounded
    /// label.
    fn command_name(command: &Self::Command) -> &'static str;
}

impl Stored for Order {
    fn store(store: &EventStore) -> &Store<Self> {
        &store.orders
    }

    fn creates(command: &OrderCommand) -> bool {
        matches!(command, OrderCommand::Place(_))
    }

    fn command_name(command: &OrderCommand) -> &'static str {
        match command {
            OrderCommand::Place(_) => "place_order",
            OrderCommand::Confirm { .. } => "confirm_order",
            OrderCommand::Cancel { .. } => "cancel_order",
            OrderCommand::Ship(_) => "ship_order",
            OrderCommand::Deliver { .. } => "deliver_order",
            OrderCommand::RecordPaymentStatus { .. } => "record_order_payment_status",
        }
    }
}

impl Stored for Payment {
    fn store(store: &EventStore) -> &Store<Self> {
        &store.payments
    }

    fn creates(command: &PaymentCommand) -> bool {
        matches!(command, PaymentCommand::Create(_))
    }

    fn command_name(command: &PaymentCommand) -> &'static str {
        match command {
            PaymentCommand::Create(_) => "create_payment",
            PaymentCommand::Authorize { .. } => "authorize_payment",
            PaymentCommand::Capture { .. } => "capture_payment",
            PaymentCommand::Refund { .. } => "refund_payment",
            PaymentCommand::Void { .. } => "void_payment",
            PaymentCommand::Fail { .. } => "fail_payment",
        }
    }
}

impl Stored for Customer {
    fn store(store: &EventStore) -> &Store<Self> {
        &store.customers
    }

    fn creates(command: &CustomerCommand) -> bool {
        matches!(command, CustomerCommand::Register(_))
    }

    fn command_name(command: &CustomerCommand) -> &'static str {
        match command {
            CustomerCommand::Register(_) => "register_customer",
            CustomerCommand::AddNote { .. } => "add_customer_note",
            CustomerCommand::Erase { .. } => "erase_customer",
        }
    }
}

pub struct EventStore {
    pool: PgPool,
    /// Seals the personal fields of new events (ADR 0020).
    keys: crate::privacy::Keyring,
    /// Writes every append (group commit); wakes the feed's readers after each commit.
    appender: Appender,
    orders: Store<Order>,
    payments: Store<Payment>,
    customers: Store<Customer>,
    /// Streams' channels (`type:id` → channel): a stream never changes channel, so a hit
    /// needs no read; bounded, forgotten wholesale when full.
    stream_channels: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// How many streams' channels [`EventStore`] remembers.
const KNOWN_STREAM_CHANNELS: usize = 100_000;

/// Upcasters for stored events of older schema versions, applied on every read.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    use ordo_domain::event::types;
    [
        types::CUSTOMER_REGISTERED,
        types::CUSTOMER_NOTE_ADDED,
        types::ORDER_PLACED,
    ]
    .into_iter()
    .map(|event_type| Box::new(PersonalFieldsMayBeSealed { event_type }) as Box<dyn EventUpcaster>)
    .collect()
}

/// v1 → v2 of the event types with personal fields (ADR 0020): v2 lets each personal field
/// be sealed instead of clear, so a v1 payload is a valid v2 payload as it is.
struct PersonalFieldsMayBeSealed {
    event_type: &'static str,
}

impl EventUpcaster for PersonalFieldsMayBeSealed {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.event_version = "2".into();
        event
    }
}

/// Bring a stored event up to the current schema version of its type. Every read that
/// does not go through cqrs-es (history folds, the feed) calls this.
pub fn upcast(mut event: SerializedEvent) -> SerializedEvent {
    for upcaster in upcasters() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

/// Whether an event of this type and version needs [`upcast`] before it is read.
pub fn needs_upcast(event_type: &str, event_version: &str) -> bool {
    upcasters()
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
}

fn cqrs_store<A: Aggregate>(pool: &PgPool) -> Store<A> {
    let repo =
        PostgresEventRepository::new(pool.clone()).with_tables(EVENTS_TABLE, SNAPSHOTS_TABLE);
    PersistedEventStore::new_event_store(repo).with_upcasters(upcasters())
}

impl EventStore {
    /// A store that writes personal data in clear (no master key).
    pub fn new(pool: PgPool) -> Self {
        let keys = crate::privacy::Keyring::new(pool.clone(), None);
        Self::with_keys(pool, keys)
    }

    /// A store that seals personal data with `keys` (when they hold a master key).
    pub fn with_keys(pool: PgPool, keys: crate::privacy::Keyring) -> Self {
        let wake = Wake::start(&pool);
        Self {
            keys,
            appender: Appender::start(pool.clone(), move |position| wake.notify(position)),
            orders: cqrs_store(&pool),
            payments: cqrs_store(&pool),
            customers: cqrs_store(&pool),
            stream_channels: Default::default(),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The key store personal fields are sealed and opened with.
    pub fn keys(&self) -> &crate::privacy::Keyring {
        &self.keys
    }

    /// The group-commit appender every command of this store writes through.
    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    /// The current state of a stream; a stream with no events folds to `A::default()` at
    /// version 0.
    pub async fn load<A: Stored>(&self, id: &str) -> Result<Versioned<A>, CommandError>
    where
        A::Command: Clone,
    {
        let context = A::store(self).load_aggregate(id).await?;
        Ok(Versioned {
            state: context.aggregate,
            version: context.current_sequence as u64,
        })
    }

    /// The channel of a stream (see [`crate::channels`]); `None` while it has no events.
    pub async fn stream_channel(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> Result<Option<String>, CommandError> {
        let key = format!("{aggregate_type}:{id}");
        let cache = || {
            self.stream_channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if let Some(channel) = cache().get(&key) {
            return Ok(Some(channel.clone()));
        }
        let channel = crate::channels::of_stream(&self.pool, aggregate_type, id).await?;
        if let Some(channel) = &channel {
            let mut known = cache();
            if known.len() >= KNOWN_STREAM_CHANNELS {
                known.clear();
            }
            known.insert(key, channel.clone());
        }
        Ok(channel)
    }

    /// Decide `command` against the stream's current state and append the events.
    ///
    /// With `expected` (from `If-Match`) the stream must be at exactly that version, and a
    /// lost race is reported as a version mismatch. Without it, a lost race is re-decided
    /// against the new state a few times before giving up with [`CommandError::Conflict`].
    pub async fn execute<A: Stored>(
        &self,
        id: &str,
        expected: Option<u64>,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        let assume_new = A::creates(&command);
        self.execute_with::<A, _, _>(id, expected, assume_new, metadata, || {
            let command = command.clone();
            async move { Ok((command, Facts::default())) }
        })
        .await
    }

    /// [`EventStore::execute`] for a command that needs facts from other streams: `prepare`
    /// reads them and builds the command, and names the streams it read at the versions it
    /// read, and the cap of a payment it creates ([`Facts`]; the appender checks they still
    /// hold under the commit lock). It runs
    /// again for every attempt. `assume_new`: the stream is most likely new (a creation with
    /// a fresh id), so the first attempt decides against an empty stream without loading it;
    /// if it was not new after all, the append finds it moved and the next attempt loads it.
    ///
    /// Counted in `ordo_commands_total{command,outcome}` and timed in
    /// `ordo_command_duration_seconds{command}`; appended events are counted in
    /// `ordo_events_appended_total{aggregate,event_type}`.
    pub async fn execute_with<A, F, Fut>(
        &self,
        id: &str,
        expected: Option<u64>,
        assume_new: bool,
        metadata: &CommandMetadata,
        prepare: F,
    ) -> Result<Committed, CommandError>
    where
        A: Stored,
        A::Command: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(A::Command, Facts), CommandError>>,
    {
        let span = tracing::info_span!(
            "command",
            command = tracing::field::Empty,
            aggregate = A::TYPE,
            aggregate.id = id,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let mut name = "unknown";
        let result = tracing::Instrument::instrument(
            self.decide_and_append::<A, F, Fut>(
                id, expected, assume_new, metadata, prepare, &mut name,
            ),
            span.clone(),
        )
        .await;
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(e) => e.outcome(),
        };
        span.record("command", name);
        span.record("outcome", outcome);
        metrics::counter!("ordo_commands_total", "command" => name, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("ordo_command_duration_seconds", "command" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn decide_and_append<A, F, Fut>(
        &self,
        id: &str,
        expected: Option<u64>,
        assume_new: bool,
        metadata: &CommandMetadata,
        mut prepare: F,
        name: &mut &'static str,
    ) -> Result<Committed, CommandError>
    where
        A: Stored,
        A::Command: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(A::Command, Facts), CommandError>>,
    {
        let store = A::store(self);
        let mut attempt = 0;
        // The events' metadata: the command's, with the stream's channel.
        let mut recorded: Option<CommandMetadata> = None;
        loop {
            attempt += 1;
            let (command, facts) = prepare().await?;
            *name = A::command_name(&command);
            if recorded.is_none() {
                recorded = Some(self.in_channel::<A>(id, &command, metadata).await?);
            }
            let metadata = recorded.as_ref().unwrap_or(metadata);
            let (mut state, version) = if attempt == 1 && assume_new && expected.is_none() {
                (A::default(), 0)
            } else {
                let context = store.load_aggregate(id).await?;
                let version = context.current_sequence as u64;
                (context.aggregate, version)
            };
            if let Some(expected) = expected {
                if expected != version {
                    return Err(CommandError::VersionMismatch {
                        expected,
                        actual: version,
                    });
                }
            }
            let sink = EventSink::default();
            state
                .handle(command, &(), &sink)
                .await
                .map_err(CommandError::Domain)?;
            let events = sink.collect().await;
            let event_types: Vec<String> = events.iter().map(DomainEvent::event_type).collect();
            let mut payloads = events
                .iter()
                .map(|event| {
                    serde_json::to_value(event)
                        .map_err(|e| CommandError::Internal(format!("event not serializable: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut personal: Vec<(&str, &mut serde_json::Value)> = event_types
                .iter()
                .map(String::as_str)
                .zip(payloads.iter_mut())
                .collect();
            let owners = self
                .keys
                .seal_for_append(&mut personal)
                .await
                .map_err(|e| match e {
                    crate::privacy::PrivacyError::Erased => {
                        CommandError::Domain(ordo_domain::customer::erased())
                    }
                    crate::privacy::PrivacyError::Db(e) => CommandError::from(e),
                    other => CommandError::Internal(other.to_string()),
                })?;
            let append = Append {
                stream: StreamVersion {
                    aggregate_type: A::TYPE.to_owned(),
                    aggregate_id: id.to_owned(),
                    version,
                },
                events: events
                    .iter()
                    .zip(&payloads)
                    .map(|(event, payload)| new_event(event, payload, metadata))
                    .collect::<Result<_, _>>()?,
                reads: facts.reads,
                payment_cap: facts.payment_cap,
                owners,
                answer: metadata.answer(),
            };
            match self.appender.append(append).await? {
                Appended::Committed { version, position } => {
                    for event_type in event_types {
                        metrics::counter!(
                            "ordo_events_appended_total",
                            "aggregate" => A::TYPE,
                            "event_type" => event_type
                        )
                        .increment(1);
                    }
                    return Ok(Committed {
                        id: id.to_owned(),
                        version,
                        position,
                    });
                }
                Appended::Answered(stored) => return Err(CommandError::Answered(stored)),
                Appended::InFlight => return Err(CommandError::InFlight),
                Appended::Erased => {
                    return Err(CommandError::Domain(ordo_domain::customer::erased()))
                }
                Appended::Stale { own, actual, .. } => {
                    if let (Some(expected), true) = (expected, own) {
                        return Err(CommandError::VersionMismatch { expected, actual });
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(CommandError::Conflict);
                    }
                    tracing::debug!(aggregate.id = id, attempt, "write conflict, retrying");
                    if attempt > 1 {
                        tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
                    }
                }
            }
        }
    }

    /// The metadata of a command's events, recorded in its stream's channel. A command on an
    /// existing stream of another channel than the one `metadata` confines it to finds no
    /// such stream, exactly as if it did not exist: a scoped key must not learn that it does.
    async fn in_channel<A: Stored>(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &CommandMetadata,
    ) -> Result<CommandMetadata, CommandError>
    where
        A::Command: Clone,
    {
        let mut recorded = metadata.clone();
        if A::creates(command) {
            recorded.channel = Some(
                metadata
                    .channel
                    .clone()
                    .unwrap_or_else(|| crate::channels::DEFAULT.to_owned()),
            );
            return Ok(recorded);
        }
        if let Some(stream_channel) = self.stream_channel(A::TYPE, id).await? {
            if metadata
                .channel
                .as_ref()
                .is_some_and(|scope| *scope != stream_channel)
            {
                return Err(CommandError::Domain(DomainError::NotFound {
                    aggregate: A::TYPE,
                }));
            }
            recorded.channel = Some(stream_channel);
        }
        Ok(recorded)
    }

    /// Store an idempotent refusal's answer (no events). `Some` with the answer already
    /// stored when the key was answered meanwhile.
    pub async fn record_answer(
        &self,
        answer: Answer,
    ) -> Result<Option<StoredAnswer>, CommandError> {
        let append = Append {
            stream: StreamVersion {
                aggregate_type: String::new(),
                aggregate_id: String::new(),
                version: 0,
            },
            events: Vec::new(),
            reads: Vec::new(),
            payment_cap: None,
            owners: Vec::new(),
            answer: Some(answer),
        };
        match self.appender.append(append).await? {
            Appended::Answered(stored) => Ok(Some(stored)),
            _ => Ok(None),
        }
    }

    /// The current version of a stream (0 when it has no events), for a command that reads
    /// it as a fact and names it in its reads.
    pub async fn version_of(&self, aggregate_type: &str, id: &str) -> Result<u64, CommandError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM event_store.events
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(version.unwrap_or(0) as u64)
    }
}

/// A decided event as the appender stores it: cqrs-es's type and version, the event's JSON
/// (its personal fields sealed), and the command's metadata.
fn new_event<E: DomainEvent>(
    event: &E,
    payload: &serde_json::Value,
    metadata: &CommandMetadata,
) -> Result<NewEvent, CommandError> {
    let metadata = serde_json::to_value(metadata.to_map())
        .map_err(|e| CommandError::Internal(format!("metadata not serializable: {e}")))?;
    Ok(NewEvent::new(
        event.event_type(),
        event.event_version(),
        payload,
        &metadata,
    ))
}

/// Tells the feed's readers that events were committed: this process's at once, through
/// the [`KnownHead`], and every process's by `NOTIFY ordo_events` with the highest committed
/// position as payload.
///
/// Not from inside the appending transaction: a transaction that sends NOTIFY holds a
/// database-wide lock through its commit, which would queue every command's commit behind
/// the previous one. Instead one task sends NOTIFY after commits, one at a time and at most
/// one per [`WAKE_SPACING`]; commits made meanwhile share the next. Readers also poll, so a
/// lost wake-up only delays.
pub struct Wake {
    known: KnownHead,
    shared: Option<std::sync::Arc<WakeShared>>,
}

struct WakeShared {
    signal: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// The least time from one wake-up of other processes' readers to the next. A NOTIFY is a
/// transaction of its own, and PostgreSQL signals every backend listening in the database
/// (a process has up to three: the feed's, read-your-writes' and key revocations'), each of
/// which reads the queue in a transaction of its own. Under load the appender commits every
/// millisecond or two, and a wake-up per commit made PostgreSQL run about as many
/// transactions again as the commands themselves. Readers in this process do not wait for
/// it (the known head wakes them); a reader in another process learns of a commit at most
/// this much later, and an idle one at once.
pub const WAKE_SPACING: std::time::Duration = std::time::Duration::from_millis(5);

impl Wake {
    fn start(pool: &PgPool) -> Self {
        let known = KnownHead::of(pool);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self {
                known,
                shared: None,
            };
        };
        let shared = std::sync::Arc::new(WakeShared {
            signal: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let (pool, task, head) = (pool.clone(), shared.clone(), known.clone());
        runtime.spawn(async move {
            loop {
                task.signal.notified().await;
                if task.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let sent = tokio::time::Instant::now();
                if let Err(e) = sqlx::query("SELECT pg_notify('ordo_events', $1)")
                    .bind(head.get().to_string())
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(error = %e, "could not wake feed readers; they will poll");
                }
                // Commits made meanwhile leave one permit, and share the next wake-up.
                tokio::time::sleep_until(sent + WAKE_SPACING).await;
            }
        });
        Self {
            known,
            shared: Some(shared),
        }
    }

    fn notify(&self, position: i64) {
        self.known.raise(position);
        if let Some(shared) = &self.shared {
            shared.signal.notify_one();
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared
                .closed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            shared.signal.notify_one();
        }
    }
}
