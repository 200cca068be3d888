-- Sales channels: one storefront's world (its customers, orders and payments). The log's
-- events carry their channel in metadata (`channel`); this table is the registry of the ids
-- they may name, with each channel's own settings. A fresh database has `default`, and
-- everything recorded before channels existed belongs to it.
CREATE SCHEMA IF NOT EXISTS channels;

CREATE TABLE channels.channels (
    -- A lowercase slug: [a-z0-9] then [a-z0-9-], at most 63 characters.
    id                 text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name               text        NOT NULL,
    -- The e-mail sender of this channel's notifications; NULL: the configured sender.
    email_from_address text,
    email_from_name    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

INSERT INTO channels.channels (id, name) VALUES ('default', 'Default');

-- A key is scoped to one channel or global (NULL). Storefront keys always belong to one:
-- the existing ones to `default`; the other roles' existing keys stay global.
ALTER TABLE auth.api_keys ADD COLUMN channel text REFERENCES channels.channels (id);
UPDATE auth.api_keys SET channel = 'default' WHERE role = 'storefront';
ALTER TABLE auth.api_keys
    ADD CONSTRAINT storefront_keys_have_a_channel CHECK (role <> 'storefront' OR channel IS NOT NULL);
