-- Personal values in the read models are kept sealed with the customer's data key (ADR
-- 0020), as base64 text in the same columns; a row's `sealed` says which it holds (clear:
-- encryption off, or not sealed by `ordo privacy migrate` yet). Destroying the key then
-- makes these rows unreadable as well as the events.
--
-- The read models' tables come from projections/src/sql/*.sql (created by the projector),
-- which now have the column; tables an earlier version created get it here. Their index on
-- lower(email) goes: lookups by e-mail use the blind index (privacy.email_index), and an
-- index over sealed text would serve nothing.
DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['projections', 'projections_rebuild'] LOOP
        IF to_regclass(s || '.customers') IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.customers ADD COLUMN IF NOT EXISTS sealed boolean NOT NULL DEFAULT false', s);
            EXECUTE format('DROP INDEX IF EXISTS %I.customers_by_email', s);
        END IF;
    END LOOP;
END $$;
