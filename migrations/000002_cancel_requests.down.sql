ALTER TABLE notifications DROP COLUMN IF EXISTS cancel_requested_at;
