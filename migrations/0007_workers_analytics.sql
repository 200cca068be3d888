-- What the workers share: dead letters, for operators (redrive comes with the operations API).
CREATE SCHEMA IF NOT EXISTS workers;

CREATE TABLE workers.dead_letters (
    id              uuid        PRIMARY KEY,
    worker          text        NOT NULL,
    event_id        uuid,
    subject         text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    attempts        bigint      NOT NULL,
    error           text        NOT NULL,
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz
);
CREATE INDEX dead_letters_by_worker ON workers.dead_letters (worker, created_at);

-- The analytics worker's own schema.
CREATE SCHEMA IF NOT EXISTS analytics;

-- Events this worker has handled: a redelivery or a replay changes nothing twice.
CREATE TABLE analytics.processed (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Sales per bucket (hour and day, UTC) and currency. `orders` and `gross` count orders
-- placed in the bucket; `paid` and `refunded` sum captures and refunds recorded in it.
CREATE TABLE analytics.sales (
    granularity text        NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket      timestamptz NOT NULL,
    currency    text        NOT NULL,
    orders      bigint      NOT NULL DEFAULT 0,
    gross       bigint      NOT NULL DEFAULT 0,
    paid        bigint      NOT NULL DEFAULT 0,
    refunded    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (granularity, bucket, currency)
);

-- The funnel: which stages each order has reached (placed, confirmed, paid, shipped,
-- delivered, cancelled, refunded). Set semantics, so arrival order does not matter.
CREATE TABLE analytics.order_stages (
    order_id uuid NOT NULL,
    stage    text NOT NULL,
    PRIMARY KEY (order_id, stage)
);
CREATE INDEX order_stages_by_stage ON analytics.order_stages (stage);
