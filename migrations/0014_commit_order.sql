-- Positions in commit order. From here on every append takes the transaction-level advisory
-- lock of the commit point (commands/src/appender.rs) just before it inserts and holds it
-- through its commit, so `global_position` order is commit order and the feed reads
-- `global_position > checkpoint` alone. Until now it read (tx_id, global_position) below
-- the server's oldest open transaction, which any long transaction could hold back.
--
-- Upgrading: stop every process of the previous version before this migration runs (their
-- appends do not take the lock). The lock below waits for appends still in flight, so every
-- row written before this migration is committed once it holds it.
LOCK TABLE event_store.events IN EXCLUSIVE MODE;

-- Each reader's (tx_id, global_position) checkpoint becomes the position below the first
-- event it has not read (in the old order), or the head when it has read everything. A few
-- events it had read beyond that are read again: every reader is idempotent (projections by
-- stream version, the relay by Nats-Msg-Id and the workers' processed records, the process
-- manager by causing event).
CREATE FUNCTION pg_temp.settled(tx xid8, pos bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT min(global_position) - 1 FROM event_store.events
          WHERE (tx_id, global_position) > (tx, pos)),
        (SELECT max(global_position) FROM event_store.events),
        0)
$$;

UPDATE projections.checkpoints
   SET global_position = pg_temp.settled(tx_id, global_position),
       rebuild_position = pg_temp.settled(rebuild_tx_id, rebuild_position);
UPDATE process_manager.checkpoint SET global_position = pg_temp.settled(tx_id, global_position);
UPDATE relay.checkpoint SET global_position = pg_temp.settled(tx_id, global_position);

ALTER TABLE projections.checkpoints DROP COLUMN tx_id, DROP COLUMN rebuild_tx_id;
ALTER TABLE process_manager.checkpoint DROP COLUMN tx_id;
ALTER TABLE relay.checkpoint DROP COLUMN tx_id;

-- The old commit order's index; the column stays, as history of rows written before.
DROP INDEX event_store.events_commit_order;
COMMENT ON COLUMN event_store.events.global_position IS
    'Commit order: appends take the commit point''s advisory lock through their commit.';
COMMENT ON COLUMN event_store.events.tx_id IS
    'The writing transaction. Ordered the feed before migration 0014; unused since.';

-- The commit point, enforced here and not only in code: every statement that inserts into
-- the log takes the transaction-level advisory lock first (the appender has taken it
-- already, and a lock taken twice in one transaction is simply held), so a writer that
-- bypasses the appender still commits in position order. 8030591515127410029 is 'ordocomm'
-- as a big-endian integer, commands/src/appender.rs's COMMIT_POINT.
CREATE FUNCTION event_store.take_commit_point() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8030591515127410029);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_commit_point
    BEFORE INSERT ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.take_commit_point();
