-- The webhook backlog, counted as deliveries change. Showing an endpoint, the workers'
-- page (which the console polls every 3 s) and the delivery pool's gauges (every 5 s)
-- counted each endpoint's pending deliveries and found the oldest by reading all of them:
-- 0.1-0.15 s at 200,000, and an endpoint that never answers grows its backlog for up to
-- five days before it is disabled.
--
-- Pending deliveries now join the totals of migration 0175, kept by the same statement
-- triggers: a statement adds what it made pending (written, or due again) and takes away
-- what it settled or deleted. The oldest pending delivery of an endpoint is the first
-- entry of a partial index of its pending deliveries by creation: one probe.

-- No delivery changes between the count below and the new triggers.
LOCK TABLE integration.outbox IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE integration.outbox_totals DROP CONSTRAINT outbox_totals_status_check;
ALTER TABLE integration.outbox_totals
    ADD CONSTRAINT outbox_totals_status_check CHECK (status IN ('pending', 'delivered', 'failed'));

-- Counts per endpoint and status over 16 rows by backend, as in 0175, so that concurrent
-- writers and records do not queue on one row lock until their commits.
CREATE FUNCTION integration.count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, count(*)
          FROM new_rows c
         WHERE EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A lease or a retry leaves a delivery pending: its +1 and -1 cancel out, and the
        -- statement writes no total.
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, sum(c.delta)
          FROM (SELECT endpoint_id, status, 1 AS delta FROM new_rows
                UNION ALL
                SELECT endpoint_id, status, -1 FROM old_rows) c
         WHERE EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status HAVING sum(c.delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    ELSE
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, -count(*)
          FROM old_rows c
         WHERE EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER count_settled_on_insert ON integration.outbox;
DROP TRIGGER count_settled_on_update ON integration.outbox;
DROP TRIGGER count_settled_on_delete ON integration.outbox;
DROP FUNCTION integration.count_settled();

CREATE TRIGGER count_deliveries_on_insert AFTER INSERT ON integration.outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_deliveries();
CREATE TRIGGER count_deliveries_on_update AFTER UPDATE ON integration.outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_deliveries();
CREATE TRIGGER count_deliveries_on_delete AFTER DELETE ON integration.outbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_deliveries();

INSERT INTO integration.outbox_totals (endpoint_id, status, slot, n)
SELECT endpoint_id, 'pending', 0, count(*) FROM integration.outbox
 WHERE status = 'pending' GROUP BY endpoint_id;

CREATE INDEX outbox_pending_since ON integration.outbox (endpoint_id, created_at)
    WHERE status = 'pending';
