-- `GET /v1/webhooks` and the integration worker's row of `GET /v1/workers` counted each
-- endpoint's delivered and failed webhooks by reading every delivery the outbox keeps: a
-- scan of the wide outbox rows (each holds its body) over the whole retention window
-- (ORDO_DELIVERY_RETENTION_DAYS, 30 by default), on every call; the console polls the
-- workers' page.
--
-- The settled counts are now kept as deliveries change: statement triggers on INSERT,
-- UPDATE and DELETE add what each statement settled (a delivery recorded delivered or
-- failed, written settled) and take away what it unsettled (a replay due again) or deleted
-- (the retention purge), in the transaction of the change. Counts are spread over 16 rows
-- per endpoint and status by backend, so that the delivery pool's concurrent records do not
-- queue on one row lock until their commits. Pending deliveries are still counted, through
-- their partial indexes: they are the backlog, and its oldest one's age is reported too.
CREATE TABLE integration.outbox_totals (
    endpoint_id uuid   NOT NULL REFERENCES integration.endpoints (id) ON DELETE CASCADE,
    status      text   NOT NULL CHECK (status IN ('delivered', 'failed')),
    slot        int    NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (endpoint_id, status, slot)
);

-- Deliveries deleted with their endpoint take their totals with them (the cascade above):
-- an endpoint that no longer exists is skipped.
CREATE FUNCTION integration.count_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, count(*)
          FROM new_rows c
         WHERE c.status <> 'pending'
           AND EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, sum(c.delta)
          FROM (SELECT endpoint_id, status, 1 AS delta FROM new_rows WHERE status <> 'pending'
                UNION ALL
                SELECT endpoint_id, status, -1 FROM old_rows WHERE status <> 'pending') c
         WHERE EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status HAVING sum(c.delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    ELSE
        INSERT INTO integration.outbox_totals AS t (endpoint_id, status, slot, n)
        SELECT c.endpoint_id, c.status, pg_backend_pid() % 16, -count(*)
          FROM old_rows c
         WHERE c.status <> 'pending'
           AND EXISTS (SELECT 1 FROM integration.endpoints e WHERE e.id = c.endpoint_id)
         GROUP BY c.endpoint_id, c.status ORDER BY 1, 2
        ON CONFLICT (endpoint_id, status, slot) DO UPDATE SET n = t.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

-- The triggers' lock on the outbox (share row exclusive) is held until this migration
-- commits, so no delivery is settled between the count below and the triggers.
CREATE TRIGGER count_settled_on_insert AFTER INSERT ON integration.outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_settled();
CREATE TRIGGER count_settled_on_update AFTER UPDATE ON integration.outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_settled();
CREATE TRIGGER count_settled_on_delete AFTER DELETE ON integration.outbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration.count_settled();

INSERT INTO integration.outbox_totals (endpoint_id, status, slot, n)
SELECT endpoint_id, status, 0, count(*) FROM integration.outbox
 WHERE status <> 'pending' GROUP BY endpoint_id, status;
