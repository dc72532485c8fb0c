-- What operators look at and act on.
-- The plugin host (its supervisor's URL) the task's last call ran on.
ALTER TABLE tasks ADD COLUMN host TEXT;
-- The task this one is a retry of (same plugin, same inputs).
ALTER TABLE tasks ADD COLUMN retry_of TEXT;

-- Tasks newest first, a page at a time (a plugin's too: the page walks this
-- index and keeps its rows). One index only: every task insert pays for each.
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE INDEX tasks_by_retry_of ON tasks (retry_of) WHERE retry_of IS NOT NULL;
