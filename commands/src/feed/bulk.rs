//! Reading the whole log once for several bulk readers (the read models' rebuilds, the
//! analytics recompute): large batches in position order, each decoded once into what the
//! readers fold, and handed to every reader still listening.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::{read, Checkpoint, FeedEvent, Want};
use crate::privacy::Keyring;

/// Where a bulk read goes and how it reads.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    /// Events after this one...
    pub from: Checkpoint,
    /// ...up to this position (the head when the read began: a bulk read ends; catching up
    /// with what came meanwhile is the reader's own business).
    pub target: i64,
    /// Events per read.
    pub limit: i64,
    pub want: Want<'a>,
}

/// Read `span` once: each batch made into a `T` by `decode` (in this task, once for every
/// reader) and sent to every reader still listening. Ends at the target, when every reader
/// has hung up, or when `shutdown` turns true; a reader that wants the rest reads on from
/// where its last batch ended.
pub async fn fan_out<T: Send + Sync>(
    pool: &PgPool,
    span: Span<'_>,
    decode: impl Fn(Vec<FeedEvent>) -> T,
    readers: Vec<mpsc::Sender<Arc<T>>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    fan_out_opened(pool, None, span, decode, readers, shutdown).await
}

/// [`fan_out`], each batch's personal fields opened with `keys` before it is decoded (the
/// read models' rebuilds, ADR 0020: an erased customer's fields come out withheld).
pub async fn fan_out_opened<T: Send + Sync>(
    pool: &PgPool,
    keys: Option<&Keyring>,
    span: Span<'_>,
    decode: impl Fn(Vec<FeedEvent>) -> T,
    mut readers: Vec<mpsc::Sender<Arc<T>>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut after = span.from;
    while after.global_position < span.target && !readers.is_empty() && !*shutdown.borrow() {
        let mut events = read(&mut conn, after, span.limit.max(1), span.want).await?;
        let Some(last) = events.last() else { break };
        after = last.checkpoint;
        if let Some(keys) = keys {
            keys.open_feed_on(&mut conn, &mut events).await?;
        }
        let batch = Arc::new(decode(events));
        let mut open = Vec::with_capacity(readers.len());
        for reader in readers {
            if reader.send(batch.clone()).await.is_ok() {
                open.push(reader);
            }
        }
        readers = open;
    }
    Ok(())
}
