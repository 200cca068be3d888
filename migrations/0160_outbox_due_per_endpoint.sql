-- The delivery pool claims per endpoint (workers/src/integration/claim.sql): it walks one
-- endpoint's pending deliveries in the order they are due and stops after the few it
-- needs, and counts the endpoint's leased ones; neither reads other endpoints' backlogs.
CREATE INDEX outbox_due ON integration.outbox (endpoint_id, next_attempt_at, position, id)
    WHERE status = 'pending';
CREATE INDEX outbox_leased ON integration.outbox (endpoint_id, leased_until)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
