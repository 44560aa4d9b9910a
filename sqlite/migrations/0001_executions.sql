-- Executions, their transition history, the outbox of events, and reports
-- that were ignored. Times are Unix milliseconds in UTC.

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    action          TEXT NOT NULL,
    provider        TEXT NOT NULL,
    owner           TEXT NOT NULL,
    status          TEXT NOT NULL,
    version         INTEGER NOT NULL,
    revision        INTEGER NOT NULL,
    input           TEXT NOT NULL,
    output          TEXT,
    progress        TEXT,
    error_code      TEXT,
    error_message   TEXT,
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    external_ref    TEXT NOT NULL DEFAULT '',
    checks          INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    -- NULL exactly when the execution is terminal; while a worker holds the
    -- lease it is the lease's expiry.
    next_check_at   INTEGER,
    deadline_at     INTEGER,
    lease_owner     TEXT
) STRICT;

CREATE UNIQUE INDEX executions_idempotency
    ON executions (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX executions_due ON executions (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX executions_owner ON executions (owner, id);
CREATE INDEX executions_created ON executions (created_at);

CREATE TABLE transitions (
    execution_id TEXT NOT NULL REFERENCES executions (id),
    version      INTEGER NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    event        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (execution_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id),
    type         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    payload      BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (execution_id, version)
) STRICT;

CREATE TABLE ignored_updates (
    id           INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id),
    status       TEXT NOT NULL,
    version      INTEGER NOT NULL,
    reported     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at           INTEGER NOT NULL
) STRICT;
CREATE INDEX ignored_updates_execution ON ignored_updates (execution_id);
