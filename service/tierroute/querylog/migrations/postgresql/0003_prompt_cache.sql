-- Prompt caching: a Cascade's input tokens written to and read from the provider's prompt
-- cache, summed over its hops (each hop in `hops` carries its own), and why its answer
-- stopped ("tool_use" for an answer that called a tool). Earlier rows read 0 and ''.
ALTER TABLE query_log ADD COLUMN cache_creation_tokens BIGINT NOT NULL DEFAULT 0;

ALTER TABLE query_log ADD COLUMN cache_read_tokens BIGINT NOT NULL DEFAULT 0;

ALTER TABLE query_log ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';
