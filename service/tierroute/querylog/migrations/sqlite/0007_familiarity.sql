-- How much each routed query looked like the routing model's training prompts (0-1, the
-- model's familiarity signal) and whether it was below the model's threshold (reason
-- UNFAMILIAR_QUERY). Numbers, never text. NULL / 0 for the heuristic strategy and for models
-- without the signal.
ALTER TABLE query_log ADD COLUMN familiarity REAL;
ALTER TABLE query_log ADD COLUMN unfamiliar INTEGER NOT NULL DEFAULT 0;
