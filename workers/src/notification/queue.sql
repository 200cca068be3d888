-- The mail sender's queue for `GET /v1/workers`: what waits, how old the oldest is, what was
-- sent and what was given up on. Reads pending and failed notifications through their
-- partial indexes and the sent total kept by migration 0173's triggers, never the
-- notifications already sent.
SELECT waiting.pending, waiting.oldest_pending_seconds,
       (SELECT coalesce(sum(n), 0)::int8 FROM notification.sent_totals) AS done,
       (SELECT count(*) FROM notification.notifications WHERE status = 'failed') AS failed
  FROM (SELECT count(*) AS pending,
               coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
                   AS oldest_pending_seconds
          FROM notification.notifications WHERE status = 'pending') waiting
