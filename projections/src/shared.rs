//! One read of the feed for the live runners of a process.
//!
//! The three read models follow the same log, and in one process their runners wake on the
//! same commits: each used to read the same events, open their personal fields and decode
//! them, three times over. A [`SharedFeed`] keeps the last batch one of them read (for every
//! read model's event types, opened and decoded once); a runner whose checkpoint falls
//! inside it applies the rest of it instead of reading again, and reads from the log only
//! what was committed after the batch's end (the batch then grows by it, for the next
//! runner). Under a steady flow the runners step a few milliseconds apart, and commits land
//! between their steps: each event is still read from the log and decoded once.
//!
//! Safe because the feed is final: positions are handed out in commit order, so the events
//! after a position never change once read, and any prefix of them is a batch a runner may
//! apply. Every read model already takes batches decoded for all three (a rebuild of all
//! three reads the log once the same way) and passes over the events it does not follow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::Mutex;

use crate::model::{decode_all, Decoded, DomainEvent, Projection};
use ordo_commands::feed::{self, Checkpoint, KnownHead};
use ordo_commands::privacy::Keyring;

/// How long a batch may be applied after it was read: the personal fields it opened are
/// not kept past a moment (a customer erased since is withheld from the next read).
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last batch read for the runners that share it. Cheap to clone; the clones share.
#[derive(Clone)]
pub struct SharedFeed {
    /// What this process knows is committed: a batch is shared only while it reaches it.
    known: KnownHead,
    keys: Keyring,
    last: Arc<Mutex<Option<Batch>>>,
    reads: Arc<AtomicU64>,
    events_read: Arc<AtomicU64>,
}

struct Batch {
    /// The position the batch was read after.
    after: i64,
    events: Arc<[Decoded]>,
    read_at: Instant,
}

/// Events a runner applies: `events[range]`.
pub(crate) struct Slice {
    events: Arc<[Decoded]>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Slice {
    type Target = [Decoded];
    fn deref(&self) -> &[Decoded] {
        &self.events[self.range.clone()]
    }
}

impl Slice {
    pub(crate) fn whole(events: Vec<Decoded>) -> Self {
        Self::after(events.into(), 0, usize::MAX)
    }

    /// Up to `limit` events of `events` from index `from` on.
    fn after(events: Arc<[Decoded]>, from: usize, limit: usize) -> Self {
        let to = events.len().min(from.saturating_add(limit));
        Self {
            events,
            range: from..to,
        }
    }
}

impl Batch {
    /// Where the events after `at` start in this batch, if `at` falls inside it (before its
    /// last event) and the batch is fresh enough to apply.
    fn start_after(&self, at: i64) -> Option<usize> {
        let last = self.events.last()?.position();
        if at < self.after || at >= last || self.read_at.elapsed() >= FRESH_FOR {
            return None;
        }
        Some(self.events.partition_point(|e| e.position() <= at))
    }

    fn last_position(&self) -> i64 {
        self.events.last().map_or(self.after, Decoded::position)
    }
}

/// Every event type some read model reads.
fn every_read_models_types() -> &'static [&'static str] {
    static TYPES: OnceLock<Vec<&'static str>> = OnceLock::new();
    TYPES.get_or_init(|| Projection::event_types_of(Projection::ALL))
}

impl SharedFeed {
    /// A shared feed whose batches are opened with `keys` (the keys of every runner that
    /// shares it).
    pub fn new(pool: &PgPool, keys: Keyring) -> Self {
        Self {
            known: KnownHead::of(pool),
            keys,
            last: Arc::default(),
            reads: Arc::default(),
            events_read: Arc::default(),
        }
    }

    /// How many reads of the log the runners made (the rest they shared).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many events those reads returned: once each event, when the runners share well.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    /// Up to `limit` events after `at`: the rest of the last batch if `at` falls inside it,
    /// with the events committed after that batch read from the log when the batch holds
    /// fewer than `limit` after `at` and does not reach the head this process knows of; else
    /// a batch read from the log on `conn`. What is read is kept for the next runner. `None`
    /// when the events hold one that cannot be decoded: the runner reads for itself, so that
    /// only a read model that follows that event stops on it.
    pub(crate) async fn after(
        &self,
        conn: &mut PgConnection,
        at: i64,
        limit: i64,
    ) -> Result<Option<Slice>, sqlx::Error> {
        // Held while reading: the runners that wake with this one wait for its batch rather
        // than read the same events beside it.
        let mut last = self.last.lock().await;
        let head = self.known.get();
        let cached = last
            .as_ref()
            .and_then(|b| b.start_after(at).map(|from| (b, from)));
        let slice = match cached {
            Some((batch, from)) => {
                let held = batch.events.len() - from;
                let end = batch.last_position();
                if held as i64 >= limit || end >= head {
                    // A grown batch may hold more than `limit` after `at`.
                    Slice::after(batch.events.clone(), from, limit as usize)
                } else {
                    // The batch's rest, then what was committed after it: what a read
                    // from `at` would give (the feed is final). The grown batch keeps the
                    // events before `at` for a runner further behind, up to twice `limit`,
                    // and the older read's time, so that no opened field outlives
                    // FRESH_FOR.
                    let newer = self.read(conn, end, limit - held as i64).await?;
                    let keep_from = if batch.events.len() + newer.len() <= 2 * limit as usize {
                        0
                    } else {
                        from
                    };
                    let grown = Batch {
                        after: if keep_from == 0 { batch.after } else { at },
                        events: batch.events[keep_from..]
                            .iter()
                            .cloned()
                            .chain(newer)
                            .collect(),
                        read_at: batch.read_at,
                    };
                    let slice =
                        Slice::after(grown.events.clone(), from - keep_from, limit as usize);
                    *last = Some(grown);
                    slice
                }
            }
            None => {
                let events: Arc<[Decoded]> = self.read(conn, at, limit).await?.into();
                *last = Some(Batch {
                    after: at,
                    events: events.clone(),
                    read_at: Instant::now(),
                });
                Slice::after(events, 0, limit as usize)
            }
        };
        let undecodable = slice
            .iter()
            .any(|e| matches!(e.event, DomainEvent::Undecodable(_)));
        Ok((!undecodable).then_some(slice))
    }

    /// Up to `limit` events after `at` from the log, opened and decoded for every read model.
    async fn read(
        &self,
        conn: &mut PgConnection,
        at: i64,
        limit: i64,
    ) -> Result<Vec<Decoded>, sqlx::Error> {
        let want = feed::Want {
            event_types: Some(every_read_models_types()),
            metadata: false,
        };
        let mut read = feed::read(conn, Checkpoint::at(at), limit, want).await?;
        self.keys.open_feed_on(conn, &mut read).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.events_read
            .fetch_add(read.len() as u64, Ordering::Relaxed);
        Ok(decode_all(read))
    }
}
