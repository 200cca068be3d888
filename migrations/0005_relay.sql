-- The relay's own schema: how far the event log has been published to JetStream, per stream.
CREATE SCHEMA IF NOT EXISTS relay;

CREATE TABLE relay.checkpoint (
    stream          text        PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    published       bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
