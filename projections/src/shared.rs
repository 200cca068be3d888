//! One read of the feed for the live runners of a process.
//!
//! The three read models follow the same log, and in one process their runners wake on the
//! same commits: each used to read the same events, open their personal fields and decode
//! them, three times over. A [`SharedFeed`] keeps the last batch one of them read (for every
//! read model's event types, opened and decoded once); a runner whose checkpoint falls
//! inside it applies the rest of it instead of reading again.
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
}

struct Batch {
    /// The position the batch was read after.
    after: i64,
    events: Arc<[Decoded]>,
    read_at: Instant,
}

/// Events a runner applies: `events[from..]`.
pub(crate) struct Slice {
    events: Arc<[Decoded]>,
    from: usize,
}

impl std::ops::Deref for Slice {
    type Target = [Decoded];
    fn deref(&self) -> &[Decoded] {
        &self.events[self.from..]
    }
}

impl Slice {
    pub(crate) fn whole(events: Vec<Decoded>) -> Self {
        Self {
            events: events.into(),
            from: 0,
        }
    }
}

impl Batch {
    /// Where the events after `at` start in this batch, if `at` falls inside it and the
    /// batch is full (`limit` events) or reaches `head`: a batch read before later commits
    /// would make a runner step twice (and linger between) for what one read gives it now.
    fn start_after(&self, at: i64, head: i64, limit: i64) -> Option<usize> {
        let last = self.events.last()?.position();
        let reaches = self.events.len() as i64 >= limit || last >= head;
        if at < self.after || at >= last || !reaches || self.read_at.elapsed() >= FRESH_FOR {
            return None;
        }
        Some(self.events.partition_point(|e| e.position() <= at))
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
        }
    }

    /// How many batches were read from the log (the others were shared).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Up to `limit` events after `at`: the rest of the last batch if `at` falls inside it
    /// and it reaches the head this process knows of (or holds `limit` events), else a batch
    /// read on `conn` (which the next runner may share). `None` when the events
    /// hold one that cannot be decoded: the runner reads for itself, so that only a read
    /// model that follows that event stops on it.
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
        let shared = last.as_ref().and_then(|b| {
            b.start_after(at, head, limit)
                .map(|from| (b.events.clone(), from))
        });
        let (events, from) = match shared {
            Some(shared) => shared,
            None => {
                let want = feed::Want {
                    event_types: Some(every_read_models_types()),
                    metadata: false,
                };
                let mut read = feed::read(conn, Checkpoint::at(at), limit, want).await?;
                self.keys.open_feed_on(conn, &mut read).await?;
                self.reads.fetch_add(1, Ordering::Relaxed);
                let events: Arc<[Decoded]> = decode_all(read).into();
                *last = Some(Batch {
                    after: at,
                    events: events.clone(),
                    read_at: Instant::now(),
                });
                (events, 0)
            }
        };
        let slice = Slice { events, from };
        let undecodable = slice
            .iter()
            .any(|e| matches!(e.event, DomainEvent::Undecodable(_)));
        Ok((!undecodable).then_some(slice))
    }
}
