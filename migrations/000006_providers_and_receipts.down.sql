DROP INDEX notifications_unfinished_updated_idx;
CREATE INDEX notifications_unfinished_updated_idx ON notifications (updated_at, id)
    WHERE status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING');
DROP INDEX delivery_attempts_provider_message_idx;
ALTER TABLE delivery_attempts
    DROP COLUMN provider, DROP COLUMN provider_message_id, DROP COLUMN receipt,
    DROP COLUMN receipt_reason, DROP COLUMN receipt_at;
-- A notification still SENT goes back to PROCESSING, which the reconciler resumes.
UPDATE notifications SET status = 'PROCESSING' WHERE status = 'SENT';
ALTER TABLE notifications DROP COLUMN provider, DROP COLUMN receipt;
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING',
                      'DELIVERED', 'FAILED', 'CANCELLED'));
