-- The integration worker's own schema: webhook endpoints registered through the API, and
-- every delivery attempt (Standard Webhooks, DESIGN.md §6).
CREATE SCHEMA IF NOT EXISTS integration;

-- Events this worker has handled: a redelivery or a replay sends nothing twice.
CREATE TABLE integration.processed (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Receivers. `event_types` holds patterns: `order.placed` (exact), `payment.*` (prefix),
-- `*` (all). `secret` is `whsec_` + base64 of the signing key.
CREATE TABLE integration.endpoints (
    id          uuid        PRIMARY KEY,
    url         text        NOT NULL,
    event_types text[]      NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- Every attempt, failed or not, written outside the handler's transaction so that failed
-- attempts stay visible. An `ok` row means the endpoint has the event: not sent again.
CREATE TABLE integration.deliveries (
    id          uuid        PRIMARY KEY,
    endpoint_id uuid        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text,
    attempt     int         NOT NULL,
    status_code int,
    ok          bool        NOT NULL,
    error       text,
    duration_ms int,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_by_endpoint ON integration.deliveries (endpoint_id, created_at);
CREATE INDEX deliveries_by_event ON integration.deliveries (endpoint_id, event_id);
