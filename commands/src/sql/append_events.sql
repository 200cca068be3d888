-- Every accepted append of a batch in one statement, in the order given (so each stream's
-- sequences take ascending positions). Positions are assigned here, under the commit point.
INSERT INTO event_store.events
       (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       WITH ORDINALITY AS u(aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, n)
 ORDER BY n
RETURNING aggregate_type, aggregate_id, sequence, global_position
