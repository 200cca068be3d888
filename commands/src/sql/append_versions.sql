-- Under the commit point: the version (last sequence) and the position of the last event of
-- each named stream; 0 and 0 for a stream with no events.
SELECT s.aggregate_type, s.aggregate_id,
       coalesce(l.sequence, 0) AS version, coalesce(l.global_position, 0) AS position
  FROM unnest($1::text[], $2::text[]) AS s(aggregate_type, aggregate_id)
  LEFT JOIN LATERAL (
        SELECT e.sequence, e.global_position FROM event_store.events e
         WHERE e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id
         ORDER BY e.sequence DESC LIMIT 1) l ON true
