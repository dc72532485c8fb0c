-- Tasks outlive every process: a step ends the plugin's call, the gateway keeps
-- what the plugin needs to continue, every event of the stream is stored, and
-- webhook notices are rows written with the change that causes them.

-- The state (JSON) the plugin handed over with its last step or checkpoint.
ALTER TABLE tasks ADD COLUMN state TEXT;
-- How many outputs the task had when that state was saved: a call that runs
-- again from it drops the outputs written after it.
ALTER TABLE tasks ADD COLUMN state_outputs BIGINT NOT NULL DEFAULT 0;
-- The task's event stream, one JSON object per line; line n is the event
-- whose SSE id is n.
ALTER TABLE tasks ADD COLUMN events TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN event_count BIGINT NOT NULL DEFAULT 0;

-- The validated values a step was submitted with (JSON), for its continuation.
ALTER TABLE task_steps ADD COLUMN inputs TEXT;

-- The webhook outbox: one row per notice and subscriber, delivered in
-- `position` order per subscriber, deleted once delivered or given up.
CREATE TABLE notices (
    webhook_href TEXT NOT NULL,
    position BIGINT NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    task_url TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (webhook_href, position, task_id)
);
