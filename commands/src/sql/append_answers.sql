-- The Idempotency-Key answers of a batch, committed with its events.
INSERT INTO event_store.idempotency_keys
       (scope, key, request_hash, response_status, response_body, completed_at)
SELECT scope, key, request_hash, status, body, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::jsonb[])
       AS u(scope, key, request_hash, status, body)
