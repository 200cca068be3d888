-- Table conventions for every Ordo migration:
--   * each module owns one schema and only its own code reads or writes it
--     (event_store: the commands module; auth: the api; projections and workers later);
--   * times are timestamptz in UTC, money is bigint minor units beside a currency text,
--     ids are uuid (the event store keeps postgres-es's text aggregate_id);
--   * nothing is ever updated or deleted in event_store.events.

CREATE SCHEMA IF NOT EXISTS event_store;

-- The columns postgres-es 0.5 reads and writes, then the ones it never names.
CREATE TABLE event_store.events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Insertion order. Not commit order: the feed orders by (tx_id, global_position).
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction; rows below pg_snapshot_xmin(pg_current_snapshot()) are final.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON event_store.events (global_position);
CREATE UNIQUE INDEX events_event_id ON event_store.events (event_id);
CREATE INDEX events_commit_order ON event_store.events (tx_id, global_position);
-- Finding what a request with an Idempotency-Key already committed (crash recovery).
CREATE INDEX events_idempotency ON event_store.events
    ((metadata ->> 'idempotency_scope'), (metadata ->> 'idempotency_key'))
    WHERE metadata ? 'idempotency_key';
-- Finding an order's payments from the payment streams' first event.
CREATE INDEX events_payments_by_order ON event_store.events ((payload ->> 'order_id'))
    WHERE aggregate_type = 'payment' AND sequence = 1;

-- postgres-es expects a snapshot table; event-store mode never writes it.
CREATE TABLE event_store.snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL,
    current_snapshot bigint NOT NULL,
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The log is append-only, enforced here and not only in code.
CREATE FUNCTION event_store.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_store.events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON event_store.events
    FOR EACH ROW EXECUTE FUNCTION event_store.refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.refuse_change();

-- Idempotency-Key records, per API key. A row without a response is either in flight
-- (its owner holds the row lock) or was orphaned by a crash (no lock; the events table
-- tells whether the command committed).
CREATE TABLE event_store.idempotency_keys (
    scope           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    text        NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON event_store.idempotency_keys (created_at);
