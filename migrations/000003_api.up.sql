-- A batch request may carry an Idempotency-Key: a retried batch replays the
-- first answer instead of storing the notifications twice.
ALTER TABLE batches
    ADD COLUMN idempotency_key     text,
    ADD COLUMN request_fingerprint text;
CREATE UNIQUE INDEX batches_idempotency_key_idx
    ON batches (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- GET /v1/notifications?batchId= pages a batch newest first; this index
-- serves that order and the batch summary, so it replaces the plain one.
-- Channel and priority filters have three values each and use
-- notifications_created_idx with a filter: an index each would slow every
-- insert for little gain.
DROP INDEX IF EXISTS notifications_batch_idx;
CREATE INDEX notifications_batch_created_idx
    ON notifications (batch_id, created_at DESC, id DESC) WHERE batch_id IS NOT NULL;
