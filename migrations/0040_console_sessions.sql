-- Console sign-ins: one row per browser session, made by pasting an API key. The cookie holds
-- a 256-bit random token; only its SHA-256 is stored (as for API keys). A session acts with
-- its key's role, so revoking the key ends its sessions too.
CREATE SCHEMA IF NOT EXISTS console;

CREATE TABLE console.sessions (
    id           uuid        PRIMARY KEY,
    token_hash   bytea       NOT NULL UNIQUE,
    -- Sent back in every form of this session; a POST without it is refused.
    csrf_token   text        NOT NULL,
    key_id       uuid        NOT NULL REFERENCES auth.api_keys (id),
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

CREATE INDEX sessions_live ON console.sessions (expires_at) WHERE revoked_at IS NULL;
