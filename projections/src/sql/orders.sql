-- Orders read model. `{schema}` is `projections` (live) or `projections_rebuild`.
CREATE TABLE IF NOT EXISTS {schema}.orders (
    id                 uuid        PRIMARY KEY,
    customer_id        uuid        NOT NULL,
    -- The sales channel (of the order's stream); `default` for orders placed before channels.
    channel            text        NOT NULL DEFAULT 'default',
    status             text        NOT NULL,
    payment_status     text        NOT NULL,
    fulfillment_status text        NOT NULL,
    currency           text        NOT NULL,
    total              bigint      NOT NULL,
    line_count         integer     NOT NULL,
    -- Written only when it changes (the upsert sends NULL otherwise); never NULL at rest.
    lines              jsonb,
    placed_at          timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON {schema}.orders (customer_id, id);
CREATE INDEX IF NOT EXISTS orders_by_status ON {schema}.orders (status, id);
CREATE INDEX IF NOT EXISTS orders_by_channel ON {schema}.orders (channel, id);

-- What each payment contributes to its order's payment status.
CREATE TABLE IF NOT EXISTS {schema}.order_payments (
    payment_id uuid   PRIMARY KEY,
    order_id   uuid   NOT NULL,
    status     text   NOT NULL,
    authorized bigint NOT NULL,
    captured   bigint NOT NULL,
    refunded   bigint NOT NULL,
    version    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS order_payments_by_order ON {schema}.order_payments (order_id); -- read by the fold: built with the table
