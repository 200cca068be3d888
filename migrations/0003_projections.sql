-- The feed wakes its readers when events commit (notifications are delivered at commit).
CREATE FUNCTION event_store.notify_appended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ordo_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.notify_appended();

-- The projections module: live read models in `projections`, a rebuild's copies in
-- `projections_rebuild` until they are swapped in. The read-model tables themselves are
-- created by the projections crate from its own DDL (projections/src/sql/), so that a
-- rebuild creates the same tables in the other schema.
CREATE SCHEMA IF NOT EXISTS projections;
CREATE SCHEMA IF NOT EXISTS projections_rebuild;

-- One row per projection. The checkpoint is the (tx_id, global_position) of the last
-- applied event, written in the same transaction as the read-model rows it produced.
CREATE TABLE projections.checkpoints (
    name              text        PRIMARY KEY,
    tx_id             xid8        NOT NULL DEFAULT '0',
    global_position   bigint      NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Set when an event could not be applied; cleared once it is.
    last_error        text,
    error_position    bigint,
    -- Rebuild: requested → running → (swapped, back to NULL); progress beside it.
    rebuild_state     text CHECK (rebuild_state IN ('requested', 'running')),
    rebuild_tx_id     xid8        NOT NULL DEFAULT '0',
    rebuild_position  bigint      NOT NULL DEFAULT 0,
    rebuild_done      bigint      NOT NULL DEFAULT 0,
    rebuild_total     bigint      NOT NULL DEFAULT 0,
    rebuild_started_at timestamptz,
    rebuild_eps       double precision NOT NULL DEFAULT 0,
    -- Which process runs it now (host:pid), for status.
    runner            text,
    heartbeat_at      timestamptz
);
