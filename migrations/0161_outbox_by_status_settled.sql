-- Pending deliveries have indexes of their own (outbox_pending, outbox_due, outbox_leased).
-- `outbox_by_status` covering them too let the planner pick it for the pool's per-aggregate
-- statements when the outbox's statistics were those of an empty table: a scan of the
-- endpoint's whole backlog per delivery. It now covers settled deliveries only (listings by
-- status, the retention purge).
DROP INDEX integration.outbox_by_status;
CREATE INDEX outbox_by_status ON integration.outbox (endpoint_id, status, created_at)
    WHERE status <> 'pending';
