-- Write the deliveries of a batch of events ($1…$8: one array element per delivery), one
-- per (endpoint, event): a pending one is left as it is, a delivered or failed one is due
-- again (an operator's replay that repeats effects).
--
-- A delivery written behind a pending delivery of its aggregate is due no sooner than that
-- one, so that the pool's claims need not walk past it while it waits. That look-up must be
-- one probe of `outbox_pending` per delivery. With no statistics at all (a table filled
-- before anything analyzed it) the planner answered a plain max() by walking `outbox_due`
-- backwards, the endpoint's whole backlog per delivery: a 500-event batch took seconds.
-- Asked for in `outbox_pending`'s order, the rows come from that index, which needs no
-- sort. Statistics taken while the outbox was nearly empty still make the planner expect
-- one row either way and scan `outbox_due` for the endpoint: the delivery pool analyzes
-- the outbox once it has grown well past them (`STATISTICS_EVERY` in `pool.rs`).
INSERT INTO integration.outbox
    (id, endpoint_id, event_id, event_type, aggregate_id, position, body, traceparent,
     next_attempt_at)
SELECT n.*,
       greatest(now(), (SELECT max(ahead.next_attempt_at)
                          FROM (SELECT p.next_attempt_at FROM integration.outbox p
                                 WHERE p.endpoint_id = n.endpoint_id
                                   AND p.aggregate_id = n.aggregate_id
                                   AND p.status = 'pending'
                                 ORDER BY p.endpoint_id, p.aggregate_id, p.position) ahead))
  FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
              $6::int8[], $7::jsonb[], $8::text[])
       AS n(id, endpoint_id, event_id, event_type, aggregate_id, position, body,
            traceparent)
ON CONFLICT (endpoint_id, event_id) DO UPDATE
    SET status = 'pending', next_attempt_at = now(), delivered_at = NULL
  WHERE outbox.status <> 'pending'
