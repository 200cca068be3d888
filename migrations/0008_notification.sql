-- The notification worker's own schema: e-mails to customers on placed, shipped, cancelled
-- and refunded, each recorded here whether it was sent over SMTP or not.
CREATE SCHEMA IF NOT EXISTS notification;

-- Events this worker has handled: a redelivery or a replay sends nothing twice.
CREATE TABLE notification.processed (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Recipients, kept from customer.registered: the order and payment events do not carry
-- the e-mail address.
CREATE TABLE notification.customers (
    customer_id uuid PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL
);

-- Every notification: `sent` when the SMTP server accepted it, `recorded` when no SMTP
-- server is configured, `failed` when it could not be sent (with `error`).
CREATE TABLE notification.notifications (
    id          uuid        PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    kind        text        NOT NULL CHECK (kind IN ('order_placed', 'order_shipped', 'order_cancelled', 'payment_refunded')),
    order_id    uuid,
    customer_id uuid,
    recipient   text,
    subject     text,
    body        text,
    status      text        NOT NULL CHECK (status IN ('sent', 'recorded', 'failed')),
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_by_order ON notification.notifications (order_id, created_at);
CREATE INDEX notifications_by_customer ON notification.notifications (customer_id, created_at);
