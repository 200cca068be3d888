-- The order-payment process manager's own schema: where it is in the feed.
CREATE SCHEMA IF NOT EXISTS process_manager;

CREATE TABLE process_manager.checkpoint (
    name            text        PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
