-- Analytics recomputed from the whole log (ADR 0021): the shadow schema a recompute loads,
-- and one row that says what the live tables count and how a recompute is going.
CREATE SCHEMA IF NOT EXISTS analytics_rebuild;

CREATE TABLE analytics.rebuild (
    only_row        boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    -- The live tables count every event up to this position: the recompute swapped in
    -- last folded them. Live batches count only events after it (0: never recomputed).
    counted_through bigint      NOT NULL DEFAULT 0,
    rebuilt_at      timestamptz,
    -- The recompute under way or interrupted: the position its shadow rows reach (NULL
    -- when none), events read, events in the log when it started, events not counted.
    position        bigint,
    done            bigint      NOT NULL DEFAULT 0,
    total           bigint      NOT NULL DEFAULT 0,
    skipped         bigint      NOT NULL DEFAULT 0,
    started_at      timestamptz
);
INSERT INTO analytics.rebuild DEFAULT VALUES;
