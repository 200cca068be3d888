-- A page of one stream's events for its history (commands/src/history.rs), with data and
-- metadata as jsonb's text and the stored hash of the event before each in the log, so
-- that each event's link can be checked as `ordo audit verify` checks it.
SELECT e.sequence, e.global_position, e.event_id, e.event_type, e.event_version, e.recorded_at,
       e.aggregate_type, e.aggregate_id, e.payload::text AS payload, e.metadata::text AS metadata,
       e.hash,
       (SELECT p.hash FROM event_store.events p
         WHERE p.global_position < e.global_position
         ORDER BY p.global_position DESC LIMIT 1) AS previous_hash
  FROM event_store.events e
 WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence > $3
 ORDER BY e.sequence
 LIMIT $4
