-- Indexes that let pruning find old terminal executions and every row
-- that belongs to one.

CREATE INDEX executions_completed ON executions (completed_at) WHERE next_check_at IS NULL;
CREATE INDEX webhook_deliveries_execution ON webhook_deliveries (execution_id);
CREATE INDEX webhook_inbox_execution ON webhook_inbox (execution_id);
