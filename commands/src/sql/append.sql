-- A batch's accepted appends and their Idempotency-Key answers, in one statement.
--
-- Events ($1-$10) go in the order given (so each stream's sequences take ascending
-- positions); positions are assigned here, under the commit point. Data and metadata come as
-- the canonical JSON text the chain hashed (commands/src/chain.rs); the event id, the
-- recorded time ($10, one per batch) and the hash are the appender's.
--
-- Answers ($11-$18): a refusal's body is given; a success's body is NULL and built here as
-- {id, version, position} with the position of the append's last event, the inserted row of
-- its stream ($16, $17) at its new version ($18).
--
-- Checked ($24 true), nothing is written unless everything the batch was decided on still
-- holds: each named stream ($19 types, $20 ids) is at its version ($21), none of the keys
-- ($11, $12) has an answer, none of the customers ($22) is erased, each order the batch
-- creates a payment for ($25, at most one payment each) has fewer payments than its cap
-- ($26), and the log's last event has the hash $23 the chain continues from. The appender's
-- fast path: decisions, checks and insert in one round trip, and an empty result when a
-- check failed. Unchecked, the appender has read and decided under the lock already.
WITH checked AS (
    SELECT NOT $24::boolean OR (
           NOT EXISTS (
               SELECT 1
                 FROM unnest($19::text[], $20::text[], $21::bigint[])
                      AS s(aggregate_type, aggregate_id, version)
                WHERE s.version <> coalesce(
                      (SELECT e.sequence FROM event_store.events e
                        WHERE e.aggregate_type = s.aggregate_type
                          AND e.aggregate_id = s.aggregate_id
                        ORDER BY e.sequence DESC LIMIT 1), 0))
       -- One primary-key lookup per key, as in under_the_lock.sql.
       AND NOT EXISTS (
               SELECT 1 FROM unnest($11::text[], $12::text[]) AS k(scope, key)
               JOIN LATERAL (
                    SELECT 1 FROM event_store.idempotency_keys i
                     WHERE i.scope = k.scope AND i.key = k.key LIMIT 1) i ON true)
       AND NOT EXISTS (
               SELECT 1 FROM privacy.customer_keys c
                WHERE c.customer_id = ANY($22::uuid[]) AND c.erased_at IS NOT NULL)
       -- Through events_payments_by_order, as in under_the_lock.sql.
       AND NOT EXISTS (
               SELECT 1 FROM unnest($25::text[], $26::bigint[]) AS c(order_id, cap)
                WHERE (SELECT count(*) FROM event_store.events e
                        WHERE e.aggregate_type = 'payment' AND e.sequence = 1
                          AND e.payload ->> 'order_id' = c.order_id) >= c.cap)
       AND (SELECT hash FROM event_store.events ORDER BY global_position DESC LIMIT 1)
           IS NOT DISTINCT FROM $23::bytea
    ) AS ok
), inserted AS (
    INSERT INTO event_store.events
           (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
            event_id, recorded_at, hash)
    SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::jsonb,
           metadata::jsonb, event_id, $10, hash
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::uuid[], $9::bytea[])
           WITH ORDINALITY AS u(aggregate_type, aggregate_id, sequence, event_type, event_version,
                                payload, metadata, event_id, hash, n)
     WHERE (SELECT ok FROM checked)
     ORDER BY n
    RETURNING aggregate_type, aggregate_id, sequence, global_position
), answered AS (
    INSERT INTO event_store.idempotency_keys
           (scope, key, request_hash, response_status, response_body, completed_at)
    SELECT a.scope, a.key, a.request_hash, a.status,
           coalesce(a.body, jsonb_build_object('id', a.aggregate_id, 'version', a.version,
                                               'position', i.global_position)),
           now()
      FROM unnest($11::text[], $12::text[], $13::text[], $14::smallint[], $15::jsonb[],
                  $16::text[], $17::text[], $18::bigint[])
           AS a(scope, key, request_hash, status, body, aggregate_type, aggregate_id, version)
      LEFT JOIN inserted i
        ON i.aggregate_type = a.aggregate_type AND i.aggregate_id = a.aggregate_id
       AND i.sequence = a.version
     WHERE (SELECT ok FROM checked)
)
SELECT aggregate_type, aggregate_id, sequence, global_position FROM inserted
