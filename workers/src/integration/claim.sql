-- Lease one endpoint's due deliveries ($1: the endpoint): only the oldest pending delivery
-- of each aggregate (a later one waits while an earlier one is pending, retries included),
-- at most $2 (what this pool's driver has room for), and at most $3 leased at the endpoint,
-- counting those any pool has leased already (the window), or one while the endpoint is
-- failing (its last attempt failed: it is probed one request at a time); $4: the lease,
-- in seconds.
--
-- Walks the endpoint's pending deliveries in the order they are due (index `outbox_due`)
-- and stops at the last one it needs: a backlog at this endpoint or any other does not
-- make the claim slower. A delivery that waits for its aggregate's earlier one is mostly
-- not due yet: scheduling a retry pushes the aggregate's later deliveries back with it.
-- The target row's conditions are checked again under its lock, so two pools never lease
-- one delivery.
--
-- Run unprepared (planned with its parameters each time): a plan cached while the outbox
-- was nearly empty walked every pending delivery once per row and took seconds at a
-- backlog of thousands. The update reaches the picked rows by primary key whatever the plan.
--
-- Committed asynchronously (synchronous_commit off for this statement's transaction), like
-- the record of an attempt: the pool's bookkeeping needs no flush to disk before it goes on.
-- A crash may forget the last fraction of a second of leases and attempts; a forgotten lease
-- or outcome only means the delivery is sent again with the same webhook-id, which
-- at-least-once delivery allows. Waiting for two flushes per delivery bounded an
-- endpoint's pace.
WITH endpoint AS (
    SELECT failing_since IS NOT NULL AS failing
      FROM integration.endpoints
     WHERE id = $1 AND disabled_at IS NULL
), busy AS (
    SELECT count(*) AS n
      FROM integration.outbox
     WHERE endpoint_id = $1 AND status = 'pending' AND leased_until > now()
), picked AS MATERIALIZED (
    SELECT o.id
      FROM integration.outbox o
     WHERE o.endpoint_id = $1
       AND EXISTS (SELECT 1 FROM endpoint)
       AND o.status = 'pending'
       AND o.next_attempt_at <= now()
       AND (o.leased_until IS NULL OR o.leased_until <= now())
       -- The aggregate's first pending delivery (a subquery per candidate, so that it is
       -- always one probe of `outbox_pending`, never a scan of the endpoint's backlog).
       AND o.id = (
           SELECT p.id FROM integration.outbox p
            WHERE p.endpoint_id = o.endpoint_id AND p.aggregate_id = o.aggregate_id
              AND p.status = 'pending'
            ORDER BY p.position, p.id
            LIMIT 1)
     ORDER BY o.next_attempt_at, o.position, o.id
     LIMIT greatest(0, least($2, CASE WHEN (SELECT failing FROM endpoint) THEN 1 ELSE $3 END
                                 - (SELECT n FROM busy)))
), leased AS (
    -- By primary key alone: no other table here for a plan to start from.
    UPDATE integration.outbox o
       SET leased_until = now() + make_interval(secs => $4), attempts = o.attempts + 1
     WHERE o.id = ANY (ARRAY(SELECT id FROM picked))
       AND o.status = 'pending' AND (o.leased_until IS NULL OR o.leased_until <= now())
 RETURNING o.id, o.endpoint_id, o.event_id, o.event_type, o.aggregate_id, o.position, o.body,
           o.traceparent, o.attempts
)
SELECT l.*, e.url, e.secret,
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret,
       e.failing_since IS NOT NULL AS failing
  FROM leased l
  JOIN integration.endpoints e ON e.id = l.endpoint_id,
       (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit
