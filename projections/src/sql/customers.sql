-- CRM customer 360. `{schema}` is `projections` (live) or `projections_rebuild`.
CREATE TABLE IF NOT EXISTS {schema}.customers (
    id              uuid        PRIMARY KEY,
    email           text,
    -- The sales channel (of the customer's stream); `default` for customers before channels.
    channel         text        NOT NULL DEFAULT 'default',
    name            text,
    order_count     bigint      NOT NULL,
    cancelled_count bigint      NOT NULL,
    open_orders     bigint      NOT NULL,
    notes_count     bigint      NOT NULL,
    first_order_at  timestamptz,
    last_order_at   timestamptz,
    registered_at   timestamptz,
    -- `email` and `name` hold the base64 of their values sealed with the customer's data
    -- key when true (ADR 0020, projections/src/customers.rs), else the clear values
    -- (encryption off, or a row `ordo privacy migrate` has not sealed yet). Sealed rows
    -- are found by e-mail through the blind index (privacy.email_index).
    sealed          boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS customers_by_channel ON {schema}.customers (channel, id);
-- Lookups by e-mail among the rows in clear (encryption off), case-insensitive. Sealed rows
-- are in it too, though no lookup matches their base64: PostgreSQL estimates an expression
-- from a whole-table index's statistics only, and with an index of the clear rows alone it
-- took an address for one in 200 customers and walked the primary key instead. An order's
-- update of its customer changes no indexed column, so it stays a heap-only update.
CREATE INDEX IF NOT EXISTS customers_by_lower_email ON {schema}.customers (lower(email));

-- Spending per customer and currency. net and average order value are derived on read:
-- net = gross - refunded, average = gross / orders (orders not cancelled). Money sums are
-- whole `numeric`s: a customer's orders, each up to 10^15 minor units, never overflow them.
CREATE TABLE IF NOT EXISTS {schema}.customer_spend (
    customer_id uuid    NOT NULL,
    currency    text    NOT NULL,
    gross       numeric NOT NULL,
    refunded    numeric NOT NULL,
    orders      bigint  NOT NULL,
    PRIMARY KEY (customer_id, currency)
);
