-- Audit samples and drift: the answer text of an opted-in audit sample (querylog.
-- audit_sample_rate), and the share of the query's words in the routing model's
-- vocabulary (a number, never text). Both are NULL on every other record.
ALTER TABLE query_log ADD COLUMN answer_text TEXT;

ALTER TABLE query_log ADD COLUMN vocab_coverage DOUBLE PRECISION;
