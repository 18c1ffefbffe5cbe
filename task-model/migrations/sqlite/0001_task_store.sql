-- portal-sync task store, SQLite. The schema is the host integration
-- contract: see docs/store.md for who writes which column.

-- RIOS documents, each distinct content stored once. `hash` is any unique
-- key; portal-sync uses the lowercase hex SHA-256 of the JSON text.
CREATE TABLE IF NOT EXISTS instruments (
    hash TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS forms (
    hash TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tasks (
    -- written by the host
    host_system_id      TEXT PRIMARY KEY,
    display_name        TEXT NOT NULL,
    instrument_hash     TEXT NOT NULL REFERENCES instruments (hash),
    form_hash           TEXT NOT NULL REFERENCES forms (hash),
    subject             TEXT NOT NULL,           -- JSON: {host_system_id, display_name, users: [...]}
    parameters          TEXT,                    -- JSON or NULL
    initial_assessment  TEXT,                    -- JSON or NULL
    -- the host sets it on insert (default awaiting-submission); then portal-sync moves it forward
    status              TEXT NOT NULL DEFAULT 'awaiting-submission',
    -- written back by portal-sync: the portal's latest state
    portal_code            TEXT,
    portal_subject_code    TEXT,
    portal_status          TEXT,
    portal_revision        BIGINT,
    portal_date_created    TEXT,                 -- YYYY-MM-DD HH:MM:SS
    portal_date_started    TEXT,
    portal_date_completed  TEXT,
    portal_assessment      TEXT,                 -- JSON or NULL
    -- written by portal-sync: last error, beside the status
    error_message       TEXT,
    error_attempts      BIGINT NOT NULL DEFAULT 0,
    error_at            TEXT,                    -- RFC 3339, UTC
    -- portal-sync internals
    lease_job           TEXT,
    lease_until         BIGINT,                  -- milliseconds since the Unix epoch
    row_version         BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, host_system_id);
