-- A dead-letter record waits in the outbox like a broker message: it is
-- written by the statement that marks its notification FAILED, so a
-- notification is dead-lettered if and only if it failed, even across a
-- crash, and never one that was delivered or cancelled meanwhile. The relay
-- publishes it to the channel's dead-letter queue (docs/DEAD_LETTERS.md).
ALTER TABLE outbox ADD COLUMN dead_letter jsonb;

-- The reconciler asks whether a notification still has an outbox row.
CREATE INDEX outbox_notification_idx ON outbox (notification_id);

-- The reconciler pages through unfinished notifications by when they last
-- changed; terminal rows (nearly all of them) stay out of the index.
CREATE INDEX notifications_unfinished_updated_idx ON notifications (updated_at, id)
    WHERE status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING');
