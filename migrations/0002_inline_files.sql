-- Small output files are kept in their row (committed with the task's end)
-- instead of a file of their own; their storage_key is then ''.
ALTER TABLE files ADD COLUMN content BYTEA;
