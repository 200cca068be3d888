-- Signed checkpoints of the hash chain (ADR 0019, commands/src/checkpoint.rs): Ordo signs
-- (position, hash) of the log's last event with an Ed25519 key kept outside the database.
-- A writer who rewrites the log consistently (recomputing every hash) or cuts its tail
-- cannot forge the signature, so `ordo audit verify` catches what the chain alone cannot.
--
-- `public_key` says which key signed; the verifier never trusts it (it checks against the
-- configured key), it only tells an auditor which key a foreign checkpoint claims.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.checkpoints (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position    bigint      NOT NULL,
    hash        bytea       NOT NULL CHECK (octet_length(hash) = 32),
    signature   bytea       NOT NULL CHECK (octet_length(signature) = 64),
    public_key  bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    signed_at   timestamptz NOT NULL
);
CREATE INDEX checkpoints_position ON audit.checkpoints (position);

-- Verification jobs started over the API (POST /v1/audit/verifications): any API process
-- answers for any job. The process running a job beats `heartbeat_at`; a `running` job
-- whose heartbeat stopped reads as `interrupted` (its process died).
CREATE TABLE audit.verifications (
    id            uuid        PRIMARY KEY,
    state         text        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    from_position bigint      NOT NULL,
    head          bigint,
    checked       bigint      NOT NULL DEFAULT 0,
    total         bigint,
    result        jsonb,
    error         text,
    requested_by  text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
