-- What a redrive needs to publish a dead letter again as the event it was.
ALTER TABLE workers.dead_letters ADD COLUMN headers jsonb NOT NULL DEFAULT '{}';
