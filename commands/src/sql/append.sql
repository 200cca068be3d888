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
WITH inserted AS (
    INSERT INTO event_store.events
           (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
            event_id, recorded_at, hash)
    SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::jsonb,
           metadata::jsonb, event_id, $10, hash
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::uuid[], $9::bytea[])
           WITH ORDINALITY AS u(aggregate_type, aggregate_id, sequence, event_type, event_version,
                                payload, metadata, event_id, hash, n)
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
)
SELECT aggregate_type, aggregate_id, sequence, global_position FROM inserted
