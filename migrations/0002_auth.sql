CREATE SCHEMA IF NOT EXISTS auth;

-- API keys are stored as the SHA-256 of the key: keys are 256-bit random, so a fast hash
-- is enough and lets every request look its key up by index.
CREATE TABLE auth.api_keys (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('storefront', 'support', 'analyst', 'admin')),
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
