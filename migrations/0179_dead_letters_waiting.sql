-- The dead letters still waiting for a redrive, per worker, oldest first: what the workers'
-- status counts and what a redrive of a worker's letters takes next. Without it both read
-- every dead letter the worker ever had (redriven ones stay, as its history). The table is
-- written when a worker gives up on a message and when an operator redrives one, never per
-- order.
CREATE INDEX dead_letters_waiting ON workers.dead_letters (worker, created_at)
    WHERE redriven_at IS NULL;
