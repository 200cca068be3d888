-- Projection versions (ADR 0014): each read model's code declares a version. `version` is
-- the one that built the live tables (tables from before versions existed were built by
-- version 1); `rebuild_version` the one building the shadow tables, while a rebuild runs.
-- A process never applies its code to tables a newer version built, and never starts a
-- rebuild for a version older than the one serving.
ALTER TABLE projections.checkpoints
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN rebuild_version integer;
