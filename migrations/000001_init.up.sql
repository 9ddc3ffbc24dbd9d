-- Batches group notifications created by one POST /v1/notifications/batch.
CREATE TABLE batches (
    id         uuid        PRIMARY KEY,
    total      integer     NOT NULL CHECK (total > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Notifications are the product's unit of work. Every status change is a
-- conditional update, so terminal states (DELIVERED, FAILED, CANCELLED) never change.
CREATE TABLE notifications (
    id                  uuid        PRIMARY KEY,
    batch_id            uuid        REFERENCES batches (id),
    channel             text        NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    priority            text        NOT NULL CHECK (priority IN ('HIGH', 'NORMAL', 'LOW')),
    recipient           text        NOT NULL,
    subject             text,
    content             text        NOT NULL,
    metadata            jsonb,
    idempotency_key     text,
    request_fingerprint text,
    status              text        NOT NULL DEFAULT 'ACCEPTED'
        CHECK (status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING',
                          'DELIVERED', 'FAILED', 'CANCELLED')),
    attempts            integer     NOT NULL DEFAULT 0,
    last_error          text,
    failure_reason      text,
    next_attempt_at     timestamptz,
    scheduled_at        timestamptz,
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    delivered_at        timestamptz
);

CREATE UNIQUE INDEX notifications_idempotency_key_idx
    ON notifications (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Keyset pagination: newest first, id breaks ties.
CREATE INDEX notifications_created_idx ON notifications (created_at DESC, id DESC);
CREATE INDEX notifications_status_created_idx ON notifications (status, created_at DESC, id DESC);
CREATE INDEX notifications_batch_idx ON notifications (batch_id) WHERE batch_id IS NOT NULL;

-- One row per delivery attempt (one Deliver activity execution).
CREATE TABLE delivery_attempts (
    notification_id  uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL CHECK (attempt > 0),
    started_at       timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    status_code      integer,
    outcome          text        NOT NULL,
    error            text,
    response_excerpt text,
    PRIMARY KEY (notification_id, attempt)
);

-- Transactional outbox: written in the same transaction as the notification,
-- deleted by the relay only after RabbitMQ confirmed the publish.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    notification_id uuid        NOT NULL,
    channel         text        NOT NULL,
    priority        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay (LISTEN outbox) once per inserting statement, batch or single.
CREATE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
