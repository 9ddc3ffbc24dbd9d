-- Operations: retry, cancel and erase, one notification at a time or over a
-- filter; erasure; the dead-letter messages a retry or an erasure retires.

-- generation counts the explicit retries of a notification (each is a new
-- run of its workflow); attempt_base is the attempts made before the current
-- generation, which starts a fresh budget after them. erased_at marks a
-- notification whose recipient and content were erased.
ALTER TABLE notifications
    ADD COLUMN generation   integer NOT NULL DEFAULT 0,
    ADD COLUMN attempt_base integer NOT NULL DEFAULT 0,
    ADD COLUMN erased_at    timestamptz;

-- Erasing a person's notifications finds them by recipient.
CREATE INDEX notifications_recipient_idx ON notifications (recipient, created_at DESC, id DESC);

-- One row per operation (POST /v1/operations); its workflow pages through
-- the matching notifications newest first, after the cursor, and moves the
-- cursor and the counts in the same transaction as each page's changes, so a
-- crash resumes it without doing an item twice.
CREATE TABLE operations (
    id                  uuid        PRIMARY KEY,
    action              text        NOT NULL CHECK (action IN ('retry', 'cancel', 'erase')),
    filter              jsonb       NOT NULL,
    max_per_second      integer     NOT NULL CHECK (max_per_second > 0),
    status              text        NOT NULL DEFAULT 'RUNNING'
        CHECK (status IN ('RUNNING', 'COMPLETED', 'CANCELLED', 'FAILED')),
    matched             bigint      NOT NULL DEFAULT 0,
    processed           bigint      NOT NULL DEFAULT 0,
    succeeded           bigint      NOT NULL DEFAULT 0,
    skipped             jsonb       NOT NULL DEFAULT '{}',
    cursor_created_at   timestamptz,
    cursor_id           uuid,
    error               text,
    idempotency_key     text,
    request_fingerprint text,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX operations_created_idx ON operations (created_at DESC, id DESC);
CREATE UNIQUE INDEX operations_idempotency_key_idx ON operations (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_running_idx ON operations (created_at) WHERE status = 'RUNNING';

-- Idempotency keys of retries of one notification: the key answers the
-- retry it made, and is refused for another notification.
CREATE TABLE notification_retries (
    idempotency_key text        PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    generation      integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_retries_notification_idx ON notification_retries (notification_id);

-- Dead-letter messages to take out of a channel's DLQ: those of the
-- notification with a generation below below_generation (it was retried, or
-- erased). The worker's sweeper removes them and then these rows.
CREATE TABLE dead_letter_retirements (
    notification_id  uuid        NOT NULL,
    channel          text        NOT NULL,
    below_generation integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, below_generation)
);
CREATE INDEX dead_letter_retirements_channel_idx ON dead_letter_retirements (channel, created_at);
