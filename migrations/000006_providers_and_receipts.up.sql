-- Providers and receipts: each attempt names the provider it went to and
-- the provider's id for the message (a Twilio SID, an email's Message-ID),
-- and what the provider's receipt reported; a notification awaiting a
-- receipt is SENT.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING', 'SENT',
                      'DELIVERED', 'FAILED', 'CANCELLED'));
ALTER TABLE notifications ADD COLUMN provider text, ADD COLUMN receipt text;

ALTER TABLE delivery_attempts
    ADD COLUMN provider            text,
    ADD COLUMN provider_message_id text,
    ADD COLUMN receipt             text,
    ADD COLUMN receipt_reason      text,
    ADD COLUMN receipt_at          timestamptz;

-- A receipt names the provider's message id.
CREATE INDEX delivery_attempts_provider_message_idx ON delivery_attempts (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- The reconciler's index covers SENT too.
DROP INDEX notifications_unfinished_updated_idx;
CREATE INDEX notifications_unfinished_updated_idx ON notifications (updated_at, id)
    WHERE status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING', 'SENT');
