-- A worker dead-letters a message JetStream gave up on (a max-deliveries advisory) unless
-- it already has a dead letter for that event: the lookup is by worker and event.
CREATE INDEX dead_letters_by_event ON workers.dead_letters (worker, event_id);
