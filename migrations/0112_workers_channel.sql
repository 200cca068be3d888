-- The workers' own tables carry the sales channel of what they record (from the
-- `ce-ordochannel` header); everything recorded before channels existed is `default`'s.

-- Sales per bucket, currency and channel: the figures of all channels add up to the totals.
ALTER TABLE analytics.sales ADD COLUMN channel text NOT NULL DEFAULT 'default';
ALTER TABLE analytics.sales DROP CONSTRAINT sales_pkey;
ALTER TABLE analytics.sales ADD PRIMARY KEY (granularity, bucket, currency, channel);

-- Each order's stages, with the order's channel.
ALTER TABLE analytics.order_stages ADD COLUMN channel text NOT NULL DEFAULT 'default';
CREATE INDEX order_stages_by_channel ON analytics.order_stages (channel, stage);

-- Notifications, by the channel of the event that caused them.
ALTER TABLE notification.notifications ADD COLUMN channel text NOT NULL DEFAULT 'default';
CREATE INDEX notifications_by_channel ON notification.notifications (channel, created_at);
