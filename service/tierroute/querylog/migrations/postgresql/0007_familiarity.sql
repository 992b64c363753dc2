-- How much each routed query looked like the routing model's training prompts (0-1, the
-- model's familiarity signal) and whether it was below the model's threshold (reason
-- UNFAMILIAR_QUERY). Numbers, never text. NULL / FALSE for the heuristic strategy and for
-- models without the signal.
ALTER TABLE query_log ADD COLUMN familiarity DOUBLE PRECISION;
ALTER TABLE query_log ADD COLUMN unfamiliar BOOLEAN NOT NULL DEFAULT FALSE;
