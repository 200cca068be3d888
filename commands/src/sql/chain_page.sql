-- One page of the chain walk (commands/src/audit.rs): events after $1 up to the head $2,
-- in position order, with data and metadata as jsonb's text.
SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload::text AS payload, metadata::text AS metadata, event_id, recorded_at, hash
  FROM event_store.events
 WHERE global_position > $1 AND global_position <= $2
 ORDER BY global_position
 LIMIT $3
