-- Webhook endpoints and their signing secrets, one delivery per event and
-- endpoint with every attempt, and the receiving side's inbox.

ALTER TABLE outbox ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_unfanned ON outbox (id) WHERE fanned_out = 0;

CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL, -- JSON array of filters
    ordered         INTEGER NOT NULL DEFAULT 0,
    disabled_at     INTEGER,
    disabled_reason TEXT NOT NULL DEFAULT '',
    -- start of the current run of failures, NULL after a success
    failing_since   INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE webhook_secrets (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- NULL while current; set when a rotation retires it
    expires_at  INTEGER,
    PRIMARY KEY (endpoint_id, secret)
) STRICT;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES outbox (id),
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    execution_id    TEXT NOT NULL,
    version         INTEGER NOT NULL,
    state           TEXT NOT NULL, -- pending, delivered, dead, parked
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- when pending: the next attempt, or the lease expiry while leased
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    last_status     INTEGER,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (event_id, endpoint_id)
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, execution_id, version);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, endpoint_id);

CREATE TABLE webhook_attempts (
    id           INTEGER PRIMARY KEY,
    delivery_id  INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    status_code  INTEGER NOT NULL, -- 0 when no response came
    latency_ms   INTEGER NOT NULL,
    error        TEXT NOT NULL DEFAULT '',
    response     TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

CREATE TABLE webhook_inbox (
    event_id        TEXT PRIMARY KEY,
    execution_id    TEXT NOT NULL,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    previous_status TEXT NOT NULL,
    version         INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    -- while being handled: when the handler's claim runs out
    lease_until     INTEGER,
    processed_at    INTEGER
) STRICT;
