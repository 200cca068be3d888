-- `GET /v1/analytics/funnel` counted every order's stages (analytics.order_stages, a row per
-- order and stage, kept for good) on each call: a scan that grew with the shop's history.
-- The analytics worker now keeps the counts per channel and stage in the statement that
-- records the stages, counting only the stages that statement added (a repeat adds none),
-- and a recompute builds them with the other tables.
CREATE TABLE analytics.funnel (
    channel text   NOT NULL,
    stage   text   NOT NULL,
    orders  bigint NOT NULL,
    PRIMARY KEY (channel, stage)
);

-- No stage may be recorded between the count and the commit of this migration.
LOCK TABLE analytics.order_stages IN SHARE MODE;
INSERT INTO analytics.funnel (channel, stage, orders)
SELECT channel, stage, count(*) FROM analytics.order_stages GROUP BY channel, stage;
