-- The feed: events after a position, in position order, which is commit order.
-- $3: the event types whose payload the reader wants (NULL: all); the others pass by with
-- an empty payload so that the reader's checkpoint moves over them. $4: with metadata (of
-- the wanted events only).
-- The channel always (events recorded before channels existed belong to `default`).
SELECT global_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
       event_version, recorded_at,
       CASE WHEN $3::text[] IS NULL OR event_type = ANY($3) THEN payload::text ELSE '' END AS payload,
       CASE WHEN $4 AND ($3::text[] IS NULL OR event_type = ANY($3)) THEN metadata::text ELSE '' END
           AS metadata,
       coalesce(metadata ->> 'channel', 'default') AS channel
  FROM event_store.events
 WHERE global_position > $1
 ORDER BY global_position
 LIMIT $2
