-- The value policy's estimates behind a planned Cascade (`tierroute adapt` re-solves the
-- operating points from them): per action P(correct) and expected cost in USD, the action
-- chosen, the operating point and its price of a correct answer, as JSON. No text. NULL on
-- every call the value policy did not plan (Route, thresholds, a dropped plan).
ALTER TABLE query_log ADD COLUMN value_plan JSONB;
