-- Every accepted append of a batch in one statement, in the order given (so each stream's
-- sequences take ascending positions). Positions are assigned here, under the commit point.
-- Data and metadata come as the canonical JSON text the chain hashed (commands/src/chain.rs);
-- the event id, the recorded time ($10, one per batch) and the hash are the appender's.
INSERT INTO event_store.events
       (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
        event_id, recorded_at, hash)
SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::jsonb,
       metadata::jsonb, event_id, $10, hash
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::uuid[], $9::bytea[])
       WITH ORDINALITY AS u(aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, event_id, hash, n)
 ORDER BY n
RETURNING aggregate_type, aggregate_id, sequence, global_position
