-- A webhook endpoint is subscribed to the events of one sales channel, or (NULL) of all.
ALTER TABLE integration.endpoints ADD COLUMN channel text REFERENCES channels.channels (id);
