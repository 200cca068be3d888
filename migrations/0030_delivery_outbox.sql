-- Deliveries leave Ordo from durable outboxes (ADR 0009): the integration and notification
-- workers only write rows here and acknowledge; a delivery pool and a mail sender send,
-- with no transaction open across the network call, and record every attempt.

-- Endpoint lifecycle: a description, the secret it had before a rotation (deliveries carry
-- both signatures until `previous_secret_until`), since when it has been failing, and why
-- it was disabled (`manual`, or `auto` after failing for too long).
ALTER TABLE integration.endpoints
    ADD COLUMN description           text,
    ADD COLUMN previous_secret       text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD COLUMN failing_since         timestamptz,
    ADD COLUMN disabled_reason       text,
    ADD COLUMN updated_at            timestamptz NOT NULL DEFAULT now();

-- One delivery per (endpoint, event): the unique key makes a JetStream redelivery of an
-- event that was already written here a no-op. `status`: `pending` (to send, at
-- `next_attempt_at`), `delivered` (a 2xx), `failed` (gave up after the last attempt; an
-- operator may retry it). A pool that claims a delivery sets `leased_until`, longer than one
-- request may take: a pool that died mid-request leaves a lease that runs out.
CREATE TABLE integration.outbox (
    id               uuid        PRIMARY KEY,
    endpoint_id      uuid        NOT NULL REFERENCES integration.endpoints (id) ON DELETE CASCADE,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    aggregate_id     text        NOT NULL,
    position         bigint      NOT NULL,
    body             jsonb       NOT NULL,
    traceparent      text,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz,
    last_status_code int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
-- What is due, and the head of each endpoint's queue per aggregate (ordering).
CREATE INDEX outbox_pending ON integration.outbox (endpoint_id, aggregate_id, position)
    WHERE status = 'pending';
CREATE INDEX outbox_by_status ON integration.outbox (endpoint_id, status, created_at);

-- Attempts now belong to a delivery.
ALTER TABLE integration.deliveries ADD COLUMN delivery_id uuid;
CREATE INDEX deliveries_by_delivery ON integration.deliveries (delivery_id, created_at);

-- Notifications are the mail outbox: `pending` rows are sent by the mail sender, which
-- records each attempt in `notification.attempts` and ends with `sent` or `failed`.
ALTER TABLE notification.notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notification.notifications
    ADD CONSTRAINT notifications_status_check
        CHECK (status IN ('pending', 'sent', 'recorded', 'failed')),
    ADD COLUMN message_id      text,
    ADD COLUMN attempts        int         NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN leased_until    timestamptz,
    ADD COLUMN sent_at         timestamptz;
CREATE INDEX notifications_pending ON notification.notifications (next_attempt_at)
    WHERE status = 'pending';

CREATE TABLE notification.attempts (
    id              uuid        PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notification.notifications (id) ON DELETE CASCADE,
    attempt         int         NOT NULL,
    ok              bool        NOT NULL,
    error           text,
    duration_ms     int,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_by_notification ON notification.attempts (notification_id, created_at);
