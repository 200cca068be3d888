-- The read models carry each row's sales channel. Their tables come from
-- projections/src/sql/*.sql (created by the projector, not here), which now have the column;
-- tables an earlier version created get it here. Every row they hold was recorded before
-- channels existed, so it belongs to `default`.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orders', 'payments', 'customers'] LOOP
        IF to_regclass('projections.' || t) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE projections.%I ADD COLUMN IF NOT EXISTS channel text NOT NULL DEFAULT ''default''', t);
        END IF;
        IF to_regclass('projections_rebuild.' || t) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE projections_rebuild.%I ADD COLUMN IF NOT EXISTS channel text NOT NULL DEFAULT ''default''', t);
        END IF;
    END LOOP;
END $$;
