-- The hash chain (commands/src/chain.rs): every event appended from here on carries
-- `hash` = SHA-256 over the previous event's hash (in position order) and a canonical
-- encoding of the event, computed by the appender under the commit point. A database writer
-- who edits, deletes, inserts or reorders rows behind Ordo's back (with the append-only
-- triggers disabled) breaks a link that `ordo audit verify` names.
--
-- Events written before this migration have no hash: their canonical form was never
-- recorded and recomputing it now would certify rows nobody checked when they were written.
-- They stay unchained; the chain starts after `genesis`, the last position at this migration
-- (the first chained event links to 32 zero bytes).
ALTER TABLE event_store.events ADD COLUMN hash bytea
    CHECK (hash IS NULL OR octet_length(hash) = 32);
COMMENT ON COLUMN event_store.events.hash IS
    'SHA-256(previous event''s hash || canonical encoding of this event); commands/src/chain.rs.';

CREATE TABLE event_store.chain (
    -- One row.
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Events at or below this position predate the chain and carry no hash.
    genesis bigint  NOT NULL
);
INSERT INTO event_store.chain (genesis)
SELECT coalesce(max(global_position), 0) FROM event_store.events;
