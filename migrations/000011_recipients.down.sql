ALTER TABLE delivery_attempts DROP COLUMN IF EXISTS channel;
DROP INDEX IF EXISTS notifications_recipient_id_idx;
UPDATE notifications SET status = 'FAILED', failure_reason = 'skipped' WHERE status = 'SKIPPED';
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING', 'SENT',
                      'DELIVERED', 'FAILED', 'CANCELLED'));
ALTER TABLE notifications
    DROP COLUMN IF EXISTS skip_reason,
    DROP COLUMN IF EXISTS category,
    DROP COLUMN IF EXISTS channels,
    DROP COLUMN IF EXISTS recipient_id;
DROP TABLE IF EXISTS signing_keys;
DROP TABLE IF EXISTS opt_outs;
DROP TABLE IF EXISTS suppressions;
DROP TABLE IF EXISTS categories;
DROP TABLE IF EXISTS recipient_addresses;
DROP TABLE IF EXISTS recipients;
