-- Crypto-shredding of customers' personal data (ADR 0020, commands/src/privacy/).
--
-- Each customer has a random 32-byte data key; new events carry the customer's personal
-- fields (e-mail, name, phone, shipping address, note text) sealed with it (AES-256-GCM).
-- The data key is stored only wrapped (sealed) by a master key that never enters the
-- database (ORDO_MASTER_KEY or ORDO_MASTER_KEY_FILE). Erasing a customer deletes the wrapped
-- key: the ciphertext in the log (whose rows never change, ADR 0015) can no longer be read.
CREATE SCHEMA IF NOT EXISTS privacy;

CREATE TABLE privacy.customer_keys (
    customer_id    uuid        PRIMARY KEY,
    -- nonce (12 bytes) || AES-256-GCM(master key, data key), with the customer id as
    -- associated data. NULL once the customer is erased: the key is destroyed.
    wrapped_key    bytea       CHECK (wrapped_key IS NULL OR octet_length(wrapped_key) = 60),
    -- Which master key wrapped it (ORDO_MASTER_KEY_VERSION when it was wrapped); older
    -- versions are unwrapped with ORDO_PREVIOUS_MASTER_KEYS.
    master_version integer     CHECK (master_version IS NULL OR master_version > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Set once, by the erasure: reads then show "[erased]" for every personal field of this
    -- customer, also the clear ones of events written before encryption.
    erased_at      timestamptz,
    CHECK ((wrapped_key IS NULL) = (master_version IS NULL)),
    CHECK (erased_at IS NULL OR wrapped_key IS NULL)
);

-- The keyed blind index of each customer's e-mail address: HMAC-SHA256 over the normalized
-- (trimmed, lower-case) address with a key derived from the master key of `master_version`.
-- Lookups by e-mail go through it, never through the clear text. Deleted by the erasure.
CREATE TABLE privacy.email_index (
    customer_id    uuid    NOT NULL,
    master_version integer NOT NULL,
    digest         bytea   NOT NULL CHECK (octet_length(digest) = 32),
    PRIMARY KEY (customer_id, master_version)
);
CREATE INDEX email_index_by_digest ON privacy.email_index (digest);
