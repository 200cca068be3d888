//! The highest committed position this process knows of, so that readers find out whether
//! there is anything new without asking the database.
//!
//! Two sources raise it: this process's appender after each commit, and the `ordo_events`
//! notifications, whose payload is the position of the last event the notifying process
//! committed. A reader compares it with its checkpoint before it opens a transaction, and
//! waits on it (as well as on the notifications) when it has read everything: under load
//! most steps used to find out that nothing was new with two or three queries.
//!
//! It is a hint, never a promise: a notification may be lost (a dropped connection), so a
//! reader still reads after its poll interval whatever the hint says, and a reader never
//! spins on a hint that did not move since its last read.

use sqlx::PgPool;
use tokio::sync::watch;

use crate::db::{per_database, PerDatabase};

/// One database's known head, shared by every reader and appender of this process that
/// uses it. Cheap to clone.
#[derive(Clone)]
pub struct KnownHead {
    position: watch::Sender<i64>,
}

impl KnownHead {
    /// The known head of `pool`'s database.
    pub fn of(pool: &PgPool) -> Self {
        static HEADS: PerDatabase<KnownHead> = PerDatabase::new();
        per_database(&HEADS, pool, || Self {
            position: watch::Sender::new(0),
        })
    }

    /// The highest position known to be committed (0 when none is known yet).
    pub fn get(&self) -> i64 {
        *self.position.borrow()
    }

    /// Learn that `position` is committed; wakes the readers waiting on [`KnownHead::moved`]
    /// when it is news.
    pub fn raise(&self, position: i64) {
        self.position.send_if_modified(|known| {
            let news = position > *known;
            if news {
                *known = position;
            }
            news
        });
    }

    /// A receiver that [`watch::Receiver::changed`] wakes when the head rises.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.position.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(database: &str) -> PgPool {
        PgPool::connect_lazy(&format!("postgres://postgres@127.0.0.1:5432/{database}")).unwrap()
    }

    #[tokio::test]
    async fn each_database_has_its_own_head_and_it_only_rises() {
        let a = KnownHead::of(&pool("known_head_a"));
        let b = KnownHead::of(&pool("known_head_b"));
        let mut moved = a.subscribe();
        a.raise(10);
        a.raise(7);
        assert_eq!(a.get(), 10);
        assert_eq!(KnownHead::of(&pool("known_head_a")).get(), 10);
        assert_eq!(b.get(), 0);
        assert!(moved.has_changed().unwrap());
        moved.borrow_and_update();
        a.raise(10);
        assert!(
            !moved.has_changed().unwrap(),
            "the same head again is no news"
        );
    }
}
