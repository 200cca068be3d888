-- Payments read model. `{schema}` is `projections` (live) or `projections_rebuild`.
CREATE TABLE IF NOT EXISTS {schema}.payments (
    id          uuid        PRIMARY KEY,
    order_id    uuid        NOT NULL,
    customer_id uuid        NOT NULL,
    -- The sales channel (of the payment's stream); `default` for payments before channels.
    channel     text        NOT NULL DEFAULT 'default',
    status      text        NOT NULL,
    currency    text        NOT NULL,
    amount      bigint      NOT NULL,
    authorized  bigint      NOT NULL,
    captured    bigint      NOT NULL,
    refunded    bigint      NOT NULL,
    method      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_by_order ON {schema}.payments (order_id, id);
CREATE INDEX IF NOT EXISTS payments_by_channel ON {schema}.payments (channel, id);
