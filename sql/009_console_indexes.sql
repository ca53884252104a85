-- Indexes for the console's aggregates over a window (issue 12; docs/api.md, "Stats").
--
-- * scores_scored_at_idx: the Overview's risk levels over time and the Agents page's top risk
--   read every score of a window across all customers (scores_customer_time_idx leads with
--   customer_id, so a 30-day window read the whole table).
-- * events_decisions_ts_idx: policy rule hit counts (GET /api/v1/stats/policies) read only the
--   events that carry policy decisions; a partial index on the timestamp keeps a 30-day window
--   proportional to those rows instead of to every event. Created on the partitioned table, so
--   every day partition gets its own (and new partitions inherit it).
CREATE INDEX IF NOT EXISTS scores_scored_at_idx ON scores (scored_at);
CREATE INDEX IF NOT EXISTS events_decisions_ts_idx ON events ("timestamp")
    WHERE policy_decisions IS NOT NULL;
