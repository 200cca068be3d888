-- integration, notification: what the retention purge looks up. Delivered webhooks (with
-- their attempts) and the attempts of sent e-mail older than ORDO_DELIVERY_RETENTION_DAYS
-- are deleted in bounded batches, oldest first.
CREATE INDEX outbox_delivered_at ON integration.outbox (delivered_at) WHERE status = 'delivered';
CREATE INDEX attempts_by_time ON notification.attempts (created_at);
