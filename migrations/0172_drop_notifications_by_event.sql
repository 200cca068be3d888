-- No statement looks notifications up by the event that caused them: the worker's
-- idempotency is notification.processed, support reads them by order or customer, and the
-- sender by what is due. The index left from 0012 cost one more index entry, in the
-- notification worker's transaction, for every notification written.
DROP INDEX IF EXISTS notification.notifications_by_event;
