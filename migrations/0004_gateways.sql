-- Several gateways on one database: each start of a gateway holds a lease (a
-- row it renews), the tasks whose call it runs carry its id, and any gateway
-- adopts the tasks of a lease that expired. Times are the database's clock,
-- in Unix milliseconds.

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    -- Host name and data directory: a gateway that starts again in the same
    -- place ends its previous lease at once.
    place TEXT NOT NULL,
    -- The gateway's public HTTP address, for operators.
    url TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The gateway whose process runs the task's call; NULL while the task waits
-- for a step (it belongs to no process then).
ALTER TABLE tasks ADD COLUMN owner TEXT;

CREATE INDEX tasks_by_owner ON tasks (owner) WHERE status = 'PENDING';

-- A webhook subscriber's notices are delivered by one gateway at a time: the
-- one whose live lease holds the claim.
CREATE TABLE notice_claims (
    webhook_href TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);

-- Bytes of files kept in the database (the shared file store): a file is its
-- chunks in order; it is complete (visible) once its `file_blobs` row says so.
CREATE TABLE file_blobs (
    storage_key TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    complete BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The sweep of files no row references looks them up by key.
CREATE INDEX files_by_storage_key ON files (storage_key);

CREATE TABLE file_chunks (
    storage_key TEXT NOT NULL REFERENCES file_blobs (storage_key) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (storage_key, position)
);
