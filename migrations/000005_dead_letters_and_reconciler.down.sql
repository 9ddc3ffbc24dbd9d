DROP INDEX IF EXISTS notifications_unfinished_updated_idx;
DROP INDEX IF EXISTS outbox_notification_idx;
ALTER TABLE outbox DROP COLUMN IF EXISTS dead_letter;
