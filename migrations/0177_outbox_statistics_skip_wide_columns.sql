-- The delivery pool and the mail sender analyze their outboxes as they grow
-- (ordo_commands::db::analyze_if_behind), and autovacuum does afterwards. ANALYZE spent most
-- of its time sorting the sampled values of the wide columns: the webhook's JSON body, the
-- mail's body, subject and recipient, the trace context, the last error. No query filters
-- or joins on any of them (the one look-up into a webhook body, `body ->> 'customer_id'`,
-- is an expression, which column statistics do not describe), so the planner never reads
-- their statistics. Without them an ANALYZE of 200,000 deliveries took 214–226 ms instead
-- of 315–450 ms, and of 200,000 mails 199–206 ms instead of 334–358 ms (machine L): CPU the
-- commands running beside it get back.
ALTER TABLE integration.outbox
    ALTER COLUMN body SET STATISTICS 0,
    ALTER COLUMN traceparent SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE notification.notifications
    ALTER COLUMN body SET STATISTICS 0,
    ALTER COLUMN subject SET STATISTICS 0,
    ALTER COLUMN recipient SET STATISTICS 0,
    ALTER COLUMN error SET STATISTICS 0;
