-- The funnel report reads analytics.funnel (0174), and nothing else looks order stages up by
-- stage or by channel: the two secondary indexes only cost two index entries per stage
-- recorded, in the analytics worker's transaction for every order event. A recompute
-- interrupted before this migration may have built them on its shadow table already; they
-- go too, or the swap would bring them back.
DROP INDEX IF EXISTS analytics.order_stages_by_stage;
DROP INDEX IF EXISTS analytics.order_stages_by_channel;
DROP INDEX IF EXISTS analytics_rebuild.order_stages_by_stage;
DROP INDEX IF EXISTS analytics_rebuild.order_stages_by_channel;
