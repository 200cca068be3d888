-- Answers already stored for some Idempotency-Keys.
SELECT i.scope, i.key, i.request_hash, i.response_status, i.response_body
  FROM event_store.idempotency_keys i
  JOIN unnest($1::text[], $2::text[]) AS k(scope, key) ON i.scope = k.scope AND i.key = k.key
