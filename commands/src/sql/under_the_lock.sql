-- Under the commit point, in one round trip, what a batch's decisions read (one row each,
-- told apart by `kind`):
--   'stream': the version (last sequence) and the position of the last event of each named
--             stream ($1 types, $2 ids); 0 and 0 for a stream with no events;
--   'answer': the answer already stored for each of the batch's Idempotency-Keys ($3 scopes,
--             $4 keys);
--   'erased': each of the customers whose personal data the batch carries ($5) who is
--             erased;
--   'payments': the payments created so far (`version`) for each order the batch creates
--             one for ($6), through the partial index events_payments_by_order;
--   'head':   the hash of the log's last event, which the batch's chain continues.
SELECT 'stream' AS kind, s.aggregate_type AS a, s.aggregate_id AS b,
       coalesce(l.sequence, 0) AS version, coalesce(l.global_position, 0) AS position,
       NULL::text AS request_hash, NULL::smallint AS status, NULL::jsonb AS body,
       NULL::bytea AS hash
  FROM unnest($1::text[], $2::text[]) AS s(aggregate_type, aggregate_id)
  LEFT JOIN LATERAL (
        SELECT e.sequence, e.global_position FROM event_store.events e
         WHERE e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id
         ORDER BY e.sequence DESC LIMIT 1) l ON true
UNION ALL
SELECT 'answer', k.scope, k.key, NULL, NULL, i.request_hash, i.response_status,
       i.response_body, NULL
  FROM unnest($3::text[], $4::text[]) AS k(scope, key)
  -- One primary-key lookup per key (LIMIT 1 keeps the planner from turning this into a
  -- hash join over the whole table, which it picks while statistics say the table is empty
  -- and keeps while it grows).
  JOIN LATERAL (
        SELECT request_hash, response_status, response_body FROM event_store.idempotency_keys
         WHERE scope = k.scope AND key = k.key LIMIT 1) i ON true
UNION ALL
SELECT 'erased', k.customer_id::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM privacy.customer_keys k
 WHERE k.customer_id = ANY($5::uuid[]) AND k.erased_at IS NOT NULL
UNION ALL
SELECT 'payments', o.order_id, NULL,
       (SELECT count(*) FROM event_store.events e
         WHERE e.aggregate_type = 'payment' AND e.sequence = 1
           AND e.payload ->> 'order_id' = o.order_id),
       NULL, NULL, NULL, NULL, NULL
  FROM unnest($6::text[]) AS o(order_id)
UNION ALL
(SELECT 'head', NULL, NULL, NULL, NULL, NULL, NULL, NULL, hash
   FROM event_store.events ORDER BY global_position DESC LIMIT 1)
