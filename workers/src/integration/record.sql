-- Record one attempt at a delivery and what follows from it, in one statement (one round
-- trip, its own transaction): the attempt row; the delivery's new status ($11: delivered,
-- pending with its next attempt in $12 seconds, or failed); the aggregate's later
-- deliveries to this endpoint, which wait for this one (a retry pushes them back with it,
-- so that claims do not walk past them meanwhile; once it is settled they are due at
-- once — only those never attempted, whose due time is this bookkeeping alone); and the
-- endpoint's failing state: a success ends it, a failure starts it, and an endpoint failing
-- for longer than $15 seconds is disabled. Returns whether the endpoint was disabled now.
--
-- Prepared: parsing and planning it for every attempt was about half of its cost, and the
-- pool's statements were most of the database's work in the deliveries benchmark. It
-- reaches the delivery and the endpoint by primary key; the aggregate's later deliveries
-- by `outbox_pending` once the outbox has statistics (without any, the planner may walk
-- the endpoint's backlog through `outbox_due` instead, prepared or not): the pool keeps
-- them (`STATISTICS_EVERY` in `pool.rs`), and an analyze makes PostgreSQL plan a prepared
-- statement afresh. Committed asynchronously, like the claim (see there).
WITH attempt AS (
    INSERT INTO integration.deliveries
        (id, endpoint_id, event_id, event_type, attempt, status_code, ok, error, duration_ms,
         delivery_id)
    VALUES ($10, $2, $3, $4, $5, $6, $7, $8, $9, $1)
), delivery AS (
    UPDATE integration.outbox
       SET status = $11, leased_until = NULL, last_status_code = $6, last_error = $8,
           next_attempt_at = now() + make_interval(secs => $12),
           delivered_at = CASE WHEN $11 = 'delivered' THEN now() END
     WHERE id = $1
), later AS (
    UPDATE integration.outbox
       SET next_attempt_at = CASE WHEN $11 = 'pending'
                                  THEN greatest(next_attempt_at, now() + make_interval(secs => $12))
                                  ELSE least(next_attempt_at, now()) END
     WHERE endpoint_id = $2 AND aggregate_id = $13 AND status = 'pending'
       AND attempts = 0 AND (position, id) > ($14, $1)
), endpoint AS (
    UPDATE integration.endpoints
       SET failing_since = CASE WHEN $7 THEN NULL ELSE coalesce(failing_since, now()) END,
           disabled_at = CASE WHEN NOT $7 AND failing_since <= now() - make_interval(secs => $15)
                              THEN now() ELSE disabled_at END,
           disabled_reason = CASE WHEN NOT $7 AND failing_since <= now() - make_interval(secs => $15)
                                  THEN 'auto' ELSE disabled_reason END,
           updated_at = CASE WHEN NOT $7 AND failing_since <= now() - make_interval(secs => $15)
                             THEN now() ELSE updated_at END
     WHERE id = $2 AND CASE WHEN $7 THEN failing_since IS NOT NULL ELSE disabled_at IS NULL END
 RETURNING disabled_at IS NOT NULL AS disabled
)
SELECT coalesce((SELECT disabled FROM endpoint), false)
  FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit
