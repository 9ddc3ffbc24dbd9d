-- A cancel request is remembered on the row, so it wins even when the signal
-- to the workflow is lost or arrives before the workflow exists: no attempt
-- starts once it is set.
ALTER TABLE notifications ADD COLUMN cancel_requested_at timestamptz;
