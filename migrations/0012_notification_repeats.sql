-- An operator may ask a replay to repeat side effects (`ordo workers replay --reprocess`):
-- an event can then have more than one notification, each recorded. Idempotency stays with
-- notification.processed.
ALTER TABLE notification.notifications DROP CONSTRAINT notifications_event_id_key;
CREATE INDEX notifications_by_event ON notification.notifications (event_id);
