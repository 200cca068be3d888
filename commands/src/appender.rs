//! Group commit: the one place that writes the log.
//!
//! Commands are decided concurrently; each hands its events to the appender, which writes
//! every append waiting at that moment in one transaction and one commit, set-based, and
//! answers each. While a commit is in flight the next batch fills, so batches grow with the
//! load and no request waits for a timer.
//!
//! In the transaction, the appender first takes the commit point: a transaction-level
//! advisory lock that every writer of the log takes before it inserts (a trigger enforces it)
//! and holds through its commit. Appends are therefore serialized across every process and
//! `global_position` order is commit order, which is what lets the feed read by position
//! alone. Under that lock it reads the current version of every stream the batch touches or
//! relied on, and decides per append:
//! - its stream moved (the version it was decided on is stale), or a stream it read facts
//!   from moved: that append alone is answered [`Appended::Stale`]; the caller re-decides
//!   or reports the conflict;
//! - a customer whose personal data its events carry was erased: [`Appended::Erased`];
//! - it creates a payment for an order that has its cap of payments already, counting those
//!   accepted before it in the batch ([`PaymentCap`]): answered [`Appended::Stale`] too, so
//!   that the caller decides again and refuses it;
//! - its `Idempotency-Key` already has an answer (a duplicate that won a race in another
//!   process): answered [`Appended::Answered`] with it;
//! - otherwise its events go in, all of them, and its idempotency answer with them.
//!
//! Every inserted row is linked into the hash chain ([`crate::chain`]) here, under the lock:
//! the appender picks each event's id and the batch's recorded time itself so that what it
//! hashes is exactly what is stored.
//!
//! Round trips under the commit point are what bound the rate (ADR 0008), so the appender
//! keeps them few. It writes on a connection of its own, and:
//! - while the log's head is still the last event it wrote itself (no other process appended
//!   since), it decides a batch without reading first: one statement checks everything the
//!   decisions above would read (versions, stored answers, erasures, the chain's head) and
//!   inserts only if all of it holds. When a check fails, nothing is written and the batch
//!   is read and decided as above, in the same transaction (the *fast path*);
//! - while more appends wait, its commit begins the next batch's transaction and tries the
//!   commit point for it in the same round trip, without waiting for it.
//!
//! A batch whose statements fail as a whole (which the checks above should make impossible)
//! is retried one append per transaction, so one bad append never fails the others.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::chain;

/// The commit point's advisory-lock key: `ordocomm` as a big-endian integer. Migration 0014's
/// trigger takes the same lock for any insert into the log.
pub const COMMIT_POINT: i64 = 8_030_591_515_127_410_029;

/// Opens the appender's transaction and takes the commit point in one round trip (one simple
/// query); the statements after it see every commit made before the lock. Every statement
/// of the batch reads by index (streams' last events, stored answers by key, the chain's
/// head), and `enable_seqscan = off` keeps it so in the plans the connection caches: a plan
/// cached while `idempotency_keys` was empty scanned the whole table for every batch as it
/// grew, until the next autovacuum analyze, and keyed commands ran at half the rate.
/// (Planning every batch afresh instead cost the unkeyed rate.)
const BEGIN_AT_COMMIT_POINT: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
                                     SELECT pg_advisory_xact_lock(8030591515127410029)";

/// Commits a batch and, in the same round trip, begins the next one's transaction and asks
/// for the commit point without waiting (the one row says whether it was granted). Only the
/// lock's holder begins ahead, and only after its commit released the lock: an appender of
/// another process waiting for it is granted it first, and this one then waits its turn
/// ([`LOCK_COMMIT_POINT`]). A transaction begun ahead of the lock by anyone else could take
/// it before the batch it was meant to follow (ADR 0008).
const COMMIT_AND_BEGIN_AHEAD: &str = "COMMIT; BEGIN; SET LOCAL enable_seqscan = off; \
                                      SELECT pg_try_advisory_xact_lock(8030591515127410029)";

/// Takes the commit point in a transaction begun ahead that did not get it at once.
const LOCK_COMMIT_POINT: &str = "SELECT pg_advisory_xact_lock(8030591515127410029)";

/// A batch holds at most this many events...
const MAX_BATCH_EVENTS: usize = 2_000;
/// ...and about this many bytes of payload and metadata.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Appends waiting for the appender; callers wait for room beyond it (back-pressure).
const QUEUE: usize = 8_192;

/// One stream at one version: the version a command was decided on, or a stream whose
/// state it read facts from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamVersion {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
}

/// An event ready to store. Its data and metadata are kept as canonical JSON text
/// ([`chain::canonical`]), computed by the command's own task rather than by the appender's
/// one serialized task: what is hashed is what is stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    payload: String,
    metadata: String,
}

impl NewEvent {
    pub fn new(
        event_type: impl Into<String>,
        event_version: impl Into<String>,
        payload: &Value,
        metadata: &Value,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            event_version: event_version.into(),
            payload: chain::canonical(payload),
            metadata: chain::canonical(metadata),
        }
    }
}

/// The `Idempotency-Key` answer to store with the append.
#[derive(Debug, Clone)]
pub struct Answer {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    /// The answer's body; `None` for a success, whose body is `{id, version, position}`
    /// as the commit gives them.
    pub body: Option<Value>,
}

/// A payment's creation, capped per order: accepted only while fewer than `max` payments
/// were created for the order, counted under the commit point with those accepted before it
/// in the same batch. Creations for one order in flight at the same time are each decided
/// against a count taken before any of them is recorded; this is what keeps a burst of them
/// from passing the cap together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCap {
    pub order_id: String,
    pub max: i64,
}

/// What to append: a command's events on its stream, decided at `stream.version`.
#[derive(Debug, Clone)]
pub struct Append {
    pub stream: StreamVersion,
    pub events: Vec<NewEvent>,
    /// Streams the decision read facts from, at the versions it read.
    pub reads: Vec<StreamVersion>,
    /// The cap this append's payment creation is under, if it creates one.
    pub payment_cap: Option<PaymentCap>,
    /// The customers whose personal data the events carry: refused if any is erased.
    pub owners: Vec<Uuid>,
    pub answer: Option<Answer>,
}

/// A stored `Idempotency-Key` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub request_hash: String,
    pub status: u16,
    pub body: Value,
}

/// How one append ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Committed: the stream's version after it and the position of its last event (of the
    /// stream's last event when the append had none).
    Committed { version: u64, position: i64 },
    /// A stream moved since the decision: `stream` is at `actual` now. `own` when it is the
    /// appended stream itself rather than one it read.
    Stale {
        own: bool,
        stream: String,
        actual: u64,
    },
    /// The idempotency key already has an answer; nothing was written.
    Answered(StoredAnswer),
    /// Another append of this batch carries the same idempotency key.
    InFlight,
    /// A customer whose personal data the events carry was erased; nothing was written.
    Erased,
}

/// Only a record of an idempotent refusal: no events, no checks.
fn is_refusal(append: &Append) -> bool {
    append.events.is_empty() && append.answer.as_ref().is_some_and(|a| a.body.is_some())
}

struct Job {
    append: Append,
    reply: oneshot::Sender<Result<Appended, sqlx::Error>>,
}

/// The handle commands append through. Cheap to clone; the task behind it ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Appender {
    jobs: mpsc::Sender<Job>,
    batches: Arc<Batches>,
}

/// How the appender's committed batches were decided, counted since it started.
#[derive(Debug, Default)]
pub struct Batches {
    /// Checked and inserted in one statement, without reading first.
    pub fast: AtomicU64,
    /// Read under the commit point, then decided (the first batch, after another process
    /// appended, or when a check of the fast path failed).
    pub read: AtomicU64,
}

impl Appender {
    /// Start the appender's task on the current runtime; `committed` runs after each commit
    /// with the highest position it wrote (the feed's wake-up). It writes on a connection of
    /// its own, made with `pool`'s options.
    pub fn start(pool: PgPool, committed: impl Fn(i64) + Send + 'static) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let batches = Arc::new(Batches::default());
        let writer = Writer {
            pool,
            conn: None,
            open: Open::Nothing,
            head: None,
            batches: batches.clone(),
        };
        tokio::spawn(run(writer, queue, committed));
        Self { jobs, batches }
    }

    /// How the batches committed so far were decided.
    pub fn batches(&self) -> &Batches {
        &self.batches
    }

    /// Appends queued for the appender and not yet taken into a batch.
    pub fn waiting(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Append and wait for the outcome.
    pub async fn append(&self, append: Append) -> Result<Appended, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { append, reply })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

async fn run(mut writer: Writer, mut queue: mpsc::Receiver<Job>, committed: impl Fn(i64)) {
    while let Some(first) = queue.recv().await {
        let mut size = weight(&first.append);
        let mut batch = vec![first];
        while size.0 < MAX_BATCH_EVENTS && size.1 < MAX_BATCH_BYTES {
            let Ok(job) = queue.try_recv() else { break };
            let w = weight(&job.append);
            size = (size.0 + w.0, size.1 + w.1);
            batch.push(job);
        }
        metrics::histogram!("ordo_append_batch_size").record(batch.len() as f64);
        let appends: Vec<&Append> = batch.iter().map(|j| &j.append).collect();
        match writer.write(&appends, &|| !queue.is_empty()).await {
            Ok(outcomes) => {
                committed(highest(&outcomes));
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, appends = batch.len(), "batch failed; appending one by one");
                for job in batch {
                    let result = writer.write(&[&job.append], &|| false).await;
                    let result = result.map(|mut o| o.remove(0));
                    if let Ok(outcome) = &result {
                        committed(highest(std::slice::from_ref(outcome)));
                    }
                    let _ = job.reply.send(result);
                }
            }
        }
    }
    // Every handle is gone and every append answered; nothing is open (a transaction is
    // begun ahead only while appends wait).
    if let Some(conn) = writer.conn.take() {
        let _ = conn.close().await;
    }
}

/// The transaction the appender's connection has open between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Nothing,
    /// Begun ahead by the last commit, without the commit point.
    Begun,
    /// Begun ahead and holding the commit point.
    AtCommitPoint,
}

/// The appender's connection and what it knows between batches.
struct Writer {
    /// Whose options and acquire timeout the connection is made with.
    pool: PgPool,
    conn: Option<PgConnection>,
    open: Open,
    /// The hash of the last event this appender committed: the log's head for as long as
    /// no other process appends, which the fast path checks.
    head: Option<chain::Hash>,
    batches: Arc<Batches>,
}

/// How far a failed batch got.
enum Failed {
    /// Before its commit was sent: nothing of it was committed.
    BeforeCommit(sqlx::Error),
    /// While committing: the outcome is unknown.
    Committing(sqlx::Error),
}

impl Writer {
    /// Write a batch in one transaction and commit it; when `more` says appends wait as it
    /// commits, begin the next in the same round trip. After a failure the connection is
    /// dropped, which rolls back whatever it had open, and the next batch starts on a new
    /// one. A connection found broken before the commit was sent (PostgreSQL restarted
    /// while it idled, say) committed nothing, so the batch is tried once more on a new
    /// connection: only a failure while committing, whose outcome is unknown, reaches the
    /// callers as one.
    async fn write(
        &mut self,
        appends: &[&Append],
        more: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Appended>, sqlx::Error> {
        let reused = self.conn.is_some();
        match self.try_write(appends, more).await {
            Ok(outcomes) => Ok(outcomes),
            Err(Failed::BeforeCommit(e)) if reused && crate::error::is_unavailable(&e) => {
                self.reset();
                tracing::debug!(error = %e, "the appender's connection broke; trying a new one");
                self.try_write(appends, more).await.map_err(|failed| {
                    self.reset();
                    failed.into_error()
                })
            }
            Err(failed) => {
                self.reset();
                Err(failed.into_error())
            }
        }
    }

    fn reset(&mut self) {
        self.conn = None;
        self.open = Open::Nothing;
        self.head = None;
    }

    async fn try_write(
        &mut self,
        appends: &[&Append],
        more: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Appended>, Failed> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => empty.insert(connect(&self.pool).await.map_err(Failed::BeforeCommit)?),
        };
        let written = Self::begun(conn, self.open, appends, self.head)
            .await
            .map_err(Failed::BeforeCommit)?;
        self.open = Self::commit(conn, more())
            .await
            .map_err(Failed::Committing)?;
        self.head = Some(written.head);
        let (counter, path) = if written.fast {
            (&self.batches.fast, "fast")
        } else {
            (&self.batches.read, "read")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ordo_append_batches_total", "path" => path).increment(1);
        Ok(written.outcomes)
    }

    /// Take the commit point in the transaction `open` left (or a new one), then decide and
    /// write the batch.
    async fn begun(
        conn: &mut PgConnection,
        open: Open,
        appends: &[&Append],
        head: Option<chain::Hash>,
    ) -> Result<Written, sqlx::Error> {
        match open {
            Open::Nothing => conn.execute(BEGIN_AT_COMMIT_POINT).await?,
            Open::Begun => conn.execute(LOCK_COMMIT_POINT).await?,
            Open::AtCommitPoint => Default::default(),
        };
        decide_and_write(conn, appends, head).await
    }

    /// Commit; with `more`, begin the next transaction ahead. What is open afterwards.
    async fn commit(conn: &mut PgConnection, more: bool) -> Result<Open, sqlx::Error> {
        if !more {
            conn.execute("COMMIT").await?;
            return Ok(Open::Nothing);
        }
        let granted = conn.fetch_all(COMMIT_AND_BEGIN_AHEAD).await?;
        let granted = granted.first().map(|row| row.try_get::<bool, _>(0));
        Ok(match granted.transpose()? {
            Some(true) => Open::AtCommitPoint,
            _ => Open::Begun,
        })
    }
}

impl Failed {
    fn into_error(self) -> sqlx::Error {
        match self {
            Self::BeforeCommit(e) | Self::Committing(e) => e,
        }
    }
}

/// The name the appender's connection shows in `pg_stat_activity`, unless the database URL
/// names the application.
pub const APPLICATION_NAME: &str = "ordo appender";

/// A connection of the appender's own, made with the pool's options. Like the pool, it keeps
/// trying while PostgreSQL cannot be reached (restarting, say), for as long as the pool
/// would wait for a connection; the delays between tries come from `backon` (ADR 0009).
async fn connect(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let mut options = (*pool.connect_options()).clone();
    if options.get_application_name().is_none() {
        options = options.application_name(APPLICATION_NAME);
    }
    let deadline = tokio::time::Instant::now() + pool.options().get_acquire_timeout();
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let tried = tokio::time::timeout_at(deadline, PgConnection::connect_with(&options)).await;
        let error = match tried {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) if crate::error::is_unavailable(&e) => e,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        let delay = delays.next().unwrap_or(Duration::from_millis(500));
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(error);
        }
        tokio::time::sleep(delay).await;
    }
}

/// The highest position a batch committed (0 when it wrote no event).
fn highest(outcomes: &[Appended]) -> i64 {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Appended::Committed { position, .. } => Some(*position),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Events and bytes of an append, for the batch bounds.
fn weight(append: &Append) -> (usize, usize) {
    let bytes = append
        .events
        .iter()
        .map(|e| e.payload.len() + e.metadata.len())
        .sum();
    (append.events.len().max(1), bytes)
}

type StreamKey = (String, String);

fn key_of(stream: &StreamVersion) -> StreamKey {
    (stream.aggregate_type.clone(), stream.aggregate_id.clone())
}

/// Append a batch in one transaction on a connection of `pool`, read and decided under the
/// commit point (without the fast path); one outcome per append, in order.
pub async fn commit(pool: &PgPool, appends: &[&Append]) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = crate::db::begin_with(pool, BEGIN_AT_COMMIT_POINT).await?;
    let written = decide_and_write(&mut tx, appends, None).await?;
    tx.commit().await?;
    Ok(written.outcomes)
}

/// A batch written, not yet committed.
struct Written {
    outcomes: Vec<Appended>,
    /// The hash of the log's last event after the batch.
    head: chain::Hash,
    /// Whether it went the fast path.
    fast: bool,
}

/// Decide and write a batch in a transaction that holds the commit point.
///
/// With `head`, the hash of the last event this appender wrote, and a batch of appends that
/// cannot depend on one another ([`Checks::of`]), the fast path first: every append is taken
/// as accepted and written with the checks, in one round trip. Otherwise, or when a check
/// failed (which wrote nothing), two: read what the decisions need (versions, stored answers,
/// erasures, the chain's head), then write what they accepted.
async fn decide_and_write(
    conn: &mut PgConnection,
    appends: &[&Append],
    head: Option<chain::Hash>,
) -> Result<Written, sqlx::Error> {
    if let (Some(head), Some(checks)) = (head, Checks::of(appends)) {
        let decisions: Vec<Decision> = appends.iter().map(|_| Decision::Accept).collect();
        let current = HashMap::new();
        let (rows, answers) = rows_of(appends, &decisions, &current);
        if let Some(inserted) = write(conn, rows, answers, head, Some(checks)).await? {
            return Ok(Written {
                outcomes: outcomes(appends, decisions, &current, &inserted.positions)?,
                head: inserted.head,
                fast: true,
            });
        }
    }
    let UnderLock {
        mut current,
        stored,
        erased,
        mut payments,
        head,
    } = UnderLock::read(conn, appends).await?;
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    let decisions: Vec<Decision> = appends
        .iter()
        .map(|append| {
            decide(
                append,
                &mut current,
                &stored,
                &erased,
                &mut payments,
                &mut claimed,
            )
        })
        .collect();
    let (rows, answers) = rows_of(appends, &decisions, &current);
    let inserted = write(conn, rows, answers, head, None)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("an unchecked insert was refused".into()))?;
    Ok(Written {
        outcomes: outcomes(appends, decisions, &current, &inserted.positions)?,
        head: inserted.head,
        fast: false,
    })
}

/// The event rows and answers of a batch's accepted appends. `current`: each stream's version
/// and last position, for the answer of an append without events.
fn rows_of(
    appends: &[&Append],
    decisions: &[Decision],
    current: &HashMap<StreamKey, (u64, i64)>,
) -> (Rows, AnswerRows) {
    let mut rows = Rows::default();
    let mut answers = AnswerRows::default();
    for (append, decision) in appends.iter().zip(decisions) {
        if !matches!(decision, Decision::Accept) {
            continue;
        }
        if !is_refusal(append) {
            let from = append.stream.version;
            for (i, event) in append.events.iter().enumerate() {
                rows.push(&append.stream, from + 1 + i as u64, event);
            }
        }
        let Some(answer) = &append.answer else {
            continue;
        };
        let version = append.stream.version + append.events.len() as u64;
        let body = match (&answer.body, append.events.len()) {
            (Some(body), _) => Some(body.clone()),
            // A success: `{id, version, position}`, the position from the insert.
            (None, n) if n > 0 => None,
            (None, _) => {
                let position = current.get(&key_of(&append.stream)).map_or(0, |s| s.1);
                Some(
                    json!({"id": append.stream.aggregate_id, "version": version, "position": position}),
                )
            }
        };
        answers.push(answer, &append.stream, version, body);
    }
    (rows, answers)
}

/// Each append's outcome, once the insert has given the positions.
fn outcomes(
    appends: &[&Append],
    decisions: Vec<Decision>,
    current: &HashMap<StreamKey, (u64, i64)>,
    positions: &HashMap<(String, String, i64), i64>,
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut result = Vec::with_capacity(appends.len());
    for (append, decision) in appends.iter().zip(decisions) {
        result.push(match decision {
            Decision::Accept if is_refusal(append) => Appended::Committed {
                version: 0,
                position: 0,
            },
            Decision::Accept => {
                let stream = key_of(&append.stream);
                let version = append.stream.version + append.events.len() as u64;
                let position = match append.events.len() {
                    0 => current.get(&stream).map_or(0, |s| s.1),
                    _ => positions
                        .get(&(stream.0, stream.1, version as i64))
                        .copied()
                        .ok_or_else(|| {
                            sqlx::Error::Protocol(
                                "an appended row came back without its position".into(),
                            )
                        })?,
                };
                Appended::Committed { version, position }
            }
            Decision::Refuse(appended) => appended,
        });
    }
    Ok(result)
}

/// What the fast path checks in its insert: everything the decisions would have read.
#[derive(Default)]
struct Checks {
    /// Each appended stream and each stream read, at the version the decision saw.
    types: Vec<String>,
    ids: Vec<String>,
    versions: Vec<i64>,
    /// The customers whose personal data the batch carries: none may be erased.
    owners: Vec<Uuid>,
    /// The orders the batch creates a payment for, each under its cap.
    capped_orders: Vec<String>,
    caps: Vec<i64>,
}

impl Checks {
    /// The checks of a batch that can be decided without reading first: every append has
    /// events, on a stream no other append of the batch appends to or read, no two carry the
    /// same key, and no two create a payment for the same order. Then each append is accepted
    /// exactly when the checks hold for the whole batch, as [`decide`] would find. `None` for
    /// any other batch.
    fn of(appends: &[&Append]) -> Option<Self> {
        let mut appended = HashSet::new();
        let mut keys = HashSet::new();
        let mut capped = HashSet::new();
        for append in appends {
            if append.events.is_empty() || !appended.insert(key_of(&append.stream)) {
                return None;
            }
            if let Some(answer) = &append.answer {
                if !keys.insert((&answer.scope, &answer.key)) {
                    return None;
                }
            }
            if let Some(cap) = &append.payment_cap {
                if !capped.insert(&cap.order_id) {
                    return None;
                }
            }
        }
        let reads = appends.iter().flat_map(|a| &a.reads);
        if reads.clone().any(|r| appended.contains(&key_of(r))) {
            return None;
        }
        let mut checks = Self::default();
        for stream in appends.iter().map(|a| &a.stream).chain(reads) {
            checks.types.push(stream.aggregate_type.clone());
            checks.ids.push(stream.aggregate_id.clone());
            checks.versions.push(stream.version as i64);
        }
        checks.owners = appends
            .iter()
            .flat_map(|a| a.owners.iter().copied())
            .collect();
        for cap in appends.iter().filter_map(|a| a.payment_cap.as_ref()) {
            checks.capped_orders.push(cap.order_id.clone());
            checks.caps.push(cap.max);
        }
        Some(checks)
    }
}

enum Decision {
    Accept,
    Refuse(Appended),
}

/// Decide one append against the versions under the lock, as earlier appends of the batch
/// left them.
fn decide(
    append: &Append,
    current: &mut HashMap<StreamKey, (u64, i64)>,
    stored: &HashMap<(String, String), StoredAnswer>,
    erased: &HashSet<Uuid>,
    payments: &mut HashMap<String, i64>,
    claimed: &mut HashSet<(String, String)>,
) -> Decision {
    if let Some(answer) = &append.answer {
        let key = (answer.scope.clone(), answer.key.clone());
        if let Some(found) = stored.get(&key) {
            return Decision::Refuse(Appended::Answered(found.clone()));
        }
        if !claimed.insert(key) {
            return Decision::Refuse(Appended::InFlight);
        }
    }
    if is_refusal(append) {
        return Decision::Accept;
    }
    if append.owners.iter().any(|c| erased.contains(c)) {
        if let Some(answer) = &append.answer {
            claimed.remove(&(answer.scope.clone(), answer.key.clone()));
        }
        return Decision::Refuse(Appended::Erased);
    }
    let version_of = |s: &StreamVersion, current: &HashMap<StreamKey, (u64, i64)>| {
        current.get(&key_of(s)).map_or(0, |v| v.0)
    };
    let own = version_of(&append.stream, current);
    let stale = if own != append.stream.version {
        Some((true, format_stream(&append.stream), own))
    } else {
        append
            .reads
            .iter()
            .map(|r| (false, r, version_of(r, current)))
            .find(|(_, r, actual)| *actual != r.version)
            .map(|(own, r, actual)| (own, format_stream(r), actual))
    };
    // A creation past its order's cap: stale as well, since the count it was decided on
    // moved; decided again, it is refused.
    let capped = || {
        let cap = append.payment_cap.as_ref()?;
        let created = payments.get(&cap.order_id).copied().unwrap_or(0);
        (created >= cap.max).then(|| {
            let stream = format!("the payments of order {}", cap.order_id);
            (false, stream, created as u64)
        })
    };
    if let Some((own, stream, actual)) = stale.or_else(capped) {
        if let Some(answer) = &append.answer {
            claimed.remove(&(answer.scope.clone(), answer.key.clone()));
        }
        return Decision::Refuse(Appended::Stale {
            own,
            stream,
            actual,
        });
    }
    if let Some(cap) = &append.payment_cap {
        *payments.entry(cap.order_id.clone()).or_insert(0) += 1;
    }
    if !append.events.is_empty() {
        let entry = current.entry(key_of(&append.stream)).or_insert((0, 0));
        entry.0 = append.stream.version + append.events.len() as u64;
    }
    Decision::Accept
}

fn format_stream(stream: &StreamVersion) -> String {
    format!("{}/{}", stream.aggregate_type, stream.aggregate_id)
}

/// What the decisions of a batch read under the commit point, in one round trip.
struct UnderLock {
    /// The version and last position of every stream the batch appends to or read.
    current: HashMap<StreamKey, (u64, i64)>,
    /// The answers already stored for the batch's idempotency keys.
    stored: HashMap<(String, String), StoredAnswer>,
    /// Of the customers whose personal data the batch carries, those erased.
    erased: HashSet<Uuid>,
    /// The payments created so far for each order the batch creates one for.
    payments: HashMap<String, i64>,
    /// The hash of the log's last event: the chain continues from it.
    head: chain::Hash,
}

impl UnderLock {
    async fn read(conn: &mut PgConnection, appends: &[&Append]) -> Result<Self, sqlx::Error> {
        let mut streams: Vec<StreamKey> = appends
            .iter()
            .filter(|a| !is_refusal(a))
            .flat_map(|a| std::iter::once(&a.stream).chain(&a.reads))
            .map(key_of)
            .collect();
        streams.sort();
        streams.dedup();
        let (types, ids): (Vec<String>, Vec<String>) = streams.into_iter().unzip();
        let (scopes, keys): (Vec<String>, Vec<String>) = appends
            .iter()
            .filter_map(|a| a.answer.as_ref())
            .map(|a| (a.scope.clone(), a.key.clone()))
            .unzip();
        let mut owners: Vec<Uuid> = appends
            .iter()
            .filter(|a| !is_refusal(a))
            .flat_map(|a| a.owners.iter().copied())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let mut capped: Vec<String> = appends
            .iter()
            .filter(|a| !is_refusal(a))
            .filter_map(|a| a.payment_cap.as_ref().map(|c| c.order_id.clone()))
            .collect();
        capped.sort_unstable();
        capped.dedup();
        let rows = sqlx::query(include_str!("sql/under_the_lock.sql"))
            .bind(types)
            .bind(ids)
            .bind(scopes)
            .bind(keys)
            .bind(owners)
            .bind(capped)
            .fetch_all(&mut *conn)
            .await?;
        let mut read = Self {
            current: HashMap::new(),
            stored: HashMap::new(),
            erased: HashSet::new(),
            payments: HashMap::new(),
            // No event yet, or the last one predates the chain (or was written around the
            // appender, which verify reports): the chain (re)starts at zero.
            head: chain::ZERO,
        };
        for row in rows {
            let kind: &str = row.try_get("kind")?;
            match kind {
                "stream" => {
                    let version: i64 = row.try_get("version")?;
                    read.current.insert(
                        (row.try_get("a")?, row.try_get("b")?),
                        (version as u64, row.try_get("position")?),
                    );
                }
                "answer" => {
                    let status: Option<i16> = row.try_get("status")?;
                    let body: Option<Value> = row.try_get("body")?;
                    read.stored.insert(
                        (row.try_get("a")?, row.try_get("b")?),
                        StoredAnswer {
                            request_hash: row.try_get("request_hash")?,
                            status: status.unwrap_or(0) as u16,
                            body: body.unwrap_or(Value::Null),
                        },
                    );
                }
                "erased" => {
                    let customer: String = row.try_get("a")?;
                    if let Ok(customer) = customer.parse() {
                        read.erased.insert(customer);
                    }
                }
                "payments" => {
                    read.payments
                        .insert(row.try_get("a")?, row.try_get("version")?);
                }
                _ => {
                    let hash: Option<Vec<u8>> = row.try_get("hash")?;
                    if let Some(hash) = hash.and_then(|h| chain::Hash::try_from(h.as_slice()).ok())
                    {
                        read.head = hash;
                    }
                }
            }
        }
        Ok(read)
    }
}

/// The event rows of a batch, as the arrays of one `unnest` insert.
#[derive(Default)]
struct Rows {
    types: Vec<String>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    /// Canonical JSON text ([`chain::canonical`]): what is hashed is what is stored.
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl Rows {
    fn push(&mut self, stream: &StreamVersion, sequence: u64, event: &NewEvent) {
        self.types.push(stream.aggregate_type.clone());
        self.ids.push(stream.aggregate_id.clone());
        self.sequences.push(sequence as i64);
        self.event_types.push(event.event_type.clone());
        self.event_versions.push(event.event_version.clone());
        self.payloads.push(event.payload.clone());
        self.metadata.push(event.metadata.clone());
    }

    /// Link every row into the chain after `head`, in insert order (position order):
    /// picks each event's id and the batch's recorded time. The ids and hashes, and the time.
    fn link(&self, head: chain::Hash) -> (Vec<uuid::Uuid>, Vec<Vec<u8>>, DateTime<Utc>) {
        let mut previous = head;
        let recorded_at = chain::to_micros(Utc::now());
        let mut event_ids = Vec::with_capacity(self.types.len());
        let mut hashes = Vec::with_capacity(self.types.len());
        for i in 0..self.types.len() {
            // Time-ordered (UUIDv7): each index on an event id (the log's, the workers' processed
            // tables, notifications) grows at its right edge instead of at a random page.
            let event_id = uuid::Uuid::now_v7();
            previous = chain::link(
                &previous,
                &chain::Linked {
                    aggregate_type: &self.types[i],
                    aggregate_id: &self.ids[i],
                    sequence: self.sequences[i],
                    event_type: &self.event_types[i],
                    schema_version: &self.event_versions[i],
                    data: &self.payloads[i],
                    metadata: &self.metadata[i],
                    event_id,
                    recorded_at,
                },
            );
            event_ids.push(event_id);
            hashes.push(previous.to_vec());
        }
        (event_ids, hashes, recorded_at)
    }
}

/// What an insert gave back.
struct Inserted {
    /// The position of each event, by (type, id, sequence).
    positions: HashMap<(String, String, i64), i64>,
    /// The hash of the last event inserted (`head` when none was).
    head: chain::Hash,
}

/// Insert the batch's events, chained after `head`, and its idempotency answers, in one
/// statement. With `checks`, only if all of them hold: `None` when they did not.
async fn write(
    conn: &mut PgConnection,
    rows: Rows,
    answers: AnswerRows,
    head: chain::Hash,
    checks: Option<Checks>,
) -> Result<Option<Inserted>, sqlx::Error> {
    if rows.types.is_empty() && answers.keys.is_empty() {
        let positions = HashMap::new();
        return Ok(Some(Inserted { positions, head }));
    }
    let expected = rows.types.len();
    let (event_ids, hashes, recorded_at) = rows.link(head);
    let last = hashes
        .last()
        .and_then(|h| chain::Hash::try_from(h.as_slice()).ok());
    let checked = checks.is_some();
    let checks = checks.unwrap_or_default();
    let inserted = sqlx::query(include_str!("sql/append.sql"))
        .bind(rows.types)
        .bind(rows.ids)
        .bind(rows.sequences)
        .bind(rows.event_types)
        .bind(rows.event_versions)
        .bind(rows.payloads)
        .bind(rows.metadata)
        .bind(event_ids)
        .bind(hashes)
        .bind(recorded_at)
        .bind(answers.scopes)
        .bind(answers.keys)
        .bind(answers.hashes)
        .bind(answers.statuses)
        .bind(answers.bodies)
        .bind(answers.aggregate_types)
        .bind(answers.aggregate_ids)
        .bind(answers.versions)
        .bind(checks.types)
        .bind(checks.ids)
        .bind(checks.versions)
        .bind(checks.owners)
        .bind(head.to_vec())
        .bind(checked)
        .bind(checks.capped_orders)
        .bind(checks.caps)
        .fetch_all(&mut *conn)
        .await?;
    if checked && inserted.len() < expected {
        // A check failed: the statement inserted nothing.
        return Ok(None);
    }
    let positions = inserted
        .into_iter()
        .map(|row| {
            Ok((
                (
                    row.try_get("aggregate_type")?,
                    row.try_get("aggregate_id")?,
                    row.try_get("sequence")?,
                ),
                row.try_get("global_position")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(Inserted {
        positions,
        head: last.unwrap_or(head),
    }))
}

/// The idempotency answers of a batch, as arrays for the same insert as its events.
#[derive(Default)]
struct AnswerRows {
    scopes: Vec<String>,
    keys: Vec<String>,
    hashes: Vec<String>,
    statuses: Vec<i16>,
    /// `None` for a success with events: `{id, version, position}` is built by the insert,
    /// which knows the position of the append's last event (the stream at `versions`).
    bodies: Vec<Option<Value>>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    versions: Vec<i64>,
}

impl AnswerRows {
    fn push(&mut self, answer: &Answer, stream: &StreamVersion, version: u64, body: Option<Value>) {
        self.scopes.push(answer.scope.clone());
        self.keys.push(answer.key.clone());
        self.hashes.push(answer.request_hash.clone());
        self.statuses.push(answer.status as i16);
        self.bodies.push(body);
        self.aggregate_types.push(stream.aggregate_type.clone());
        self.aggregate_ids.push(stream.aggregate_id.clone());
        self.versions.push(version as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_that_takes_the_commit_point_takes_the_lock_the_trigger_checks() {
        let lock = format!("pg_advisory_xact_lock({COMMIT_POINT})");
        assert!(BEGIN_AT_COMMIT_POINT.contains(&lock));
        assert!(LOCK_COMMIT_POINT.contains(&lock));
        let try_lock = format!("pg_try_advisory_xact_lock({COMMIT_POINT})");
        assert!(COMMIT_AND_BEGIN_AHEAD.contains(&try_lock));
        // The next transaction skips sequential scans as the first does.
        assert!(COMMIT_AND_BEGIN_AHEAD.contains("SET LOCAL enable_seqscan = off"));
    }

    fn append(id: &str, events: usize, reads: &[&str], key: Option<&str>) -> Append {
        let stream = |id: &str| StreamVersion {
            aggregate_type: "probe".into(),
            aggregate_id: id.into(),
            version: 0,
        };
        Append {
            stream: stream(id),
            events: (0..events)
                .map(|_| NewEvent::new("probe.written", "1", &json!({}), &json!({})))
                .collect(),
            reads: reads.iter().map(|r| stream(r)).collect(),
            payment_cap: None,
            owners: vec![Uuid::nil()],
            answer: key.map(|key| Answer {
                scope: "probe".into(),
                key: key.into(),
                request_hash: "h".into(),
                status: 201,
                body: None,
            }),
        }
    }

    #[test]
    fn only_a_batch_of_independent_appends_with_events_goes_the_fast_path() {
        let fast = |batch: &[Append]| Checks::of(&batch.iter().collect::<Vec<_>>()).is_some();
        let independent = [
            append("a", 1, &["c"], Some("k1")),
            append("b", 2, &["c"], Some("k2")),
        ];
        assert!(fast(&independent));
        let checks = Checks::of(&independent.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            checks.ids,
            ["a", "b", "c", "c"],
            "each stream and each read"
        );
        assert_eq!(checks.owners.len(), 2);

        assert!(!fast(&[
            append("a", 1, &[], None),
            append("a", 1, &[], None)
        ]));
        assert!(!fast(&[
            append("a", 1, &[], None),
            append("b", 1, &["a"], None)
        ]));
        assert!(!fast(&[
            append("b", 1, &["a"], None),
            append("a", 1, &[], None)
        ]));
        assert!(!fast(&[
            append("a", 1, &[], Some("k")),
            append("b", 1, &[], Some("k"))
        ]));
        assert!(!fast(&[append("a", 0, &[], Some("k"))]), "no events");

        let paying = |id: &str, order: &str| Append {
            payment_cap: Some(PaymentCap {
                order_id: order.into(),
                max: 100,
            }),
            ..append(id, 1, &[], None)
        };
        let two_orders = [paying("a", "o1"), paying("b", "o2")];
        let checks = Checks::of(&two_orders.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            (checks.capped_orders, checks.caps),
            (vec!["o1".to_owned(), "o2".to_owned()], vec![100, 100])
        );
        assert!(
            !fast(&[paying("a", "o1"), paying("b", "o1")]),
            "two creations for one order: the second counts the first"
        );
    }
}
