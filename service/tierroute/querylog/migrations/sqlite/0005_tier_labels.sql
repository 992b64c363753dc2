-- Labels of a team's own traffic (`tierroute label`): for a logged question, what each tier
-- answered, what it cost, and the reference judge's verdict on it. One row per question
-- and tier; a row is written as soon as its two calls (answer, judge) are paid for, so a
-- stopped run resumes without paying for them again. Independent of every other table.
CREATE TABLE tier_labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    ts TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    answer_text TEXT,
    stop_reason TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    judge_tier TEXT NOT NULL DEFAULT '',
    judge_model TEXT NOT NULL DEFAULT '',
    verdict TEXT NOT NULL DEFAULT '',
    issues TEXT NOT NULL DEFAULT '[]',
    judge_input_tokens INTEGER NOT NULL DEFAULT 0,
    judge_output_tokens INTEGER NOT NULL DEFAULT 0,
    judge_cost_usd REAL NOT NULL DEFAULT 0,
    UNIQUE (request_id, tier)
);

CREATE INDEX tier_labels_ts ON tier_labels (ts);
