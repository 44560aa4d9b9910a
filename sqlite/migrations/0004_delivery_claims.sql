-- Due deliveries by endpoint, so that a claim seeks each endpoint's
-- earliest few instead of ranking every pending delivery: its cost no
-- longer grows with the backlog. It replaces the index by due time alone.

DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at, id) WHERE state = 'pending';
