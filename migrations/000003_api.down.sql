DROP INDEX IF EXISTS notifications_batch_created_idx;
CREATE INDEX IF NOT EXISTS notifications_batch_idx ON notifications (batch_id) WHERE batch_id IS NOT NULL;

DROP INDEX IF EXISTS batches_idempotency_key_idx;
ALTER TABLE batches
    DROP COLUMN IF EXISTS request_fingerprint,
    DROP COLUMN IF EXISTS idempotency_key;
