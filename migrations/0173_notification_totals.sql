-- `GET /v1/workers` gave the mail queue's totals by counting the whole of
-- notification.notifications, which keeps every notification ever written: a scan that
-- grew with the shop's history, on every call (the console and `scripts/bench.sh` poll it).
--
-- Pending and failed notifications are counted through partial indexes, which hold only
-- them. Sent ones, the bulk, are counted as they change status: only the mail sender's
-- record moves a notification to `sent` (the worker writes them pending, recorded, failed
-- or skipped), so statement triggers on UPDATE and DELETE keep the total, in the
-- transaction of the change. A notification recorded twice (a lease that ran out while its
-- mail was on the way) is counted once: the second record sees it already sent. The total
-- is spread over 16 rows by backend, so that concurrent senders do not queue on one row
-- lock until their commits.
CREATE TABLE notification.sent_totals (
    slot int    PRIMARY KEY,
    n    bigint NOT NULL
);

CREATE FUNCTION notification.count_sent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        delta := (SELECT count(*) FROM new_rows WHERE status = 'sent')
               - (SELECT count(*) FROM old_rows WHERE status = 'sent');
    ELSE
        delta := -(SELECT count(*) FROM old_rows WHERE status = 'sent');
    END IF;
    IF delta <> 0 THEN
        INSERT INTO notification.sent_totals AS t (slot, n) VALUES (pg_backend_pid() % 16, delta)
        ON CONFLICT (slot) DO UPDATE SET n = t.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

-- The triggers' lock on the table (share row exclusive) is held until this migration
-- commits, so no notification changes status between the count below and the triggers.
CREATE TRIGGER count_sent_on_update AFTER UPDATE ON notification.notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notification.count_sent();
CREATE TRIGGER count_sent_on_delete AFTER DELETE ON notification.notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notification.count_sent();

INSERT INTO notification.sent_totals (slot, n)
SELECT 0, count(*) FROM notification.notifications WHERE status = 'sent';

CREATE INDEX notifications_failed ON notification.notifications (created_at)
    WHERE status = 'failed';
