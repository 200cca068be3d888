-- Lease the due deliveries: per endpoint, only the oldest pending delivery of each
-- aggregate ($1: at most this many in flight per endpoint, counting those leased already;
-- $2: at most this many in all; $3: the lease, in seconds). The target row's conditions are
-- checked again under its lock, so two pools never lease one delivery.
WITH busy AS (
    SELECT endpoint_id, count(*) AS n
      FROM integration.outbox
     WHERE status = 'pending' AND leased_until > now()
     GROUP BY endpoint_id
), heads AS (
    SELECT o.id, o.endpoint_id,
           row_number() OVER (PARTITION BY o.endpoint_id ORDER BY o.next_attempt_at, o.position, o.id) AS rn
      FROM integration.outbox o
      JOIN integration.endpoints e ON e.id = o.endpoint_id AND e.disabled_at IS NULL
     WHERE o.status = 'pending'
       AND o.next_attempt_at <= now()
       AND (o.leased_until IS NULL OR o.leased_until <= now())
       AND NOT EXISTS (
           SELECT 1 FROM integration.outbox p
            WHERE p.endpoint_id = o.endpoint_id AND p.aggregate_id = o.aggregate_id
              AND p.status = 'pending' AND (p.position, p.id) < (o.position, o.id))
), picked AS (
    SELECT h.id
      FROM heads h LEFT JOIN busy b ON b.endpoint_id = h.endpoint_id
     WHERE h.rn + coalesce(b.n, 0) <= $1
     ORDER BY h.rn
     LIMIT $2
)
UPDATE integration.outbox o
   SET leased_until = now() + make_interval(secs => $3), attempts = o.attempts + 1
  FROM picked, integration.endpoints e
 WHERE o.id = picked.id AND e.id = o.endpoint_id
   AND o.status = 'pending' AND (o.leased_until IS NULL OR o.leased_until <= now())
RETURNING o.id, o.endpoint_id, o.event_id, o.event_type, o.body, o.traceparent, o.attempts,
          e.url, e.secret,
          CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret
