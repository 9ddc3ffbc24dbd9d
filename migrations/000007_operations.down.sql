DROP TABLE IF EXISTS dead_letter_retirements;
DROP TABLE IF EXISTS notification_retries;
DROP TABLE IF EXISTS operations;
DROP INDEX IF EXISTS notifications_recipient_idx;
ALTER TABLE notifications DROP COLUMN IF EXISTS erased_at,
    DROP COLUMN IF EXISTS attempt_base, DROP COLUMN IF EXISTS generation;
