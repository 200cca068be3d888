-- Idempotency-Key answers are written by the appender in the same transaction as the
-- command's events (commands/src/appender.rs): a row always has its answer now. Rows without
-- one were requests in flight under the previous scheme (claim, run, complete); their
-- commands either committed (the old recovery query would have rebuilt the answer from the
-- events) or did not. Their answers cannot be known here, so they are dropped: a retry of
-- such a request after the upgrade runs the command again. Stop every process of the
-- previous version before migrating, as migration 0014 asks, and this window is empty.
DELETE FROM event_store.idempotency_keys WHERE response_status IS NULL;
-- Recovery from events is gone with it.
DROP INDEX IF EXISTS event_store.events_idempotency;
