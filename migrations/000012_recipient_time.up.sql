-- Recipients II: time on the person's side. Quiet hours (a profile's own
-- window, else its tenant's default), throttles and digests (a category's),
-- per-key ordering (a notification's). Every column is NULL for a
-- notification that uses none of them, which then pays nothing for them.

-- A window in which non-critical notifications wait, local to the
-- profile's timezone: {"start":"22:00","end":"08:00"}.
ALTER TABLE recipients ADD COLUMN quiet_hours jsonb;
-- The tenant's default window, for its profiles that set none.
ALTER TABLE tenants ADD COLUMN quiet_hours jsonb;

-- A category's throttle ({"limit":3,"per":"1h"}: per recipient, at most
-- limit of its notifications reach the provider in any per) and digest
-- ({"window":"10m","maxItems":50}: notifications with one digestKey within
-- the window go as one message).
ALTER TABLE categories
    ADD COLUMN throttle jsonb,
    ADD COLUMN digest   jsonb;

-- deferred_by says why a notification waits (or waited) past its turn:
-- quiet-hours, throttle, digest or ordering; scheduled_at is then when it
-- goes. ordering_key orders a tenant's notifications that share it, in the
-- order they were accepted (created_at, then ordering_pos within a batch);
-- one waits for the one before it to end, for at most max_hold_ms from its
-- first wait (ordering_hold_until), and ordering_broken records that it
-- went before it did. digest_key gathers a category's notifications to one
-- recipient into one digest (digest_id: the digest, which is also the id of
-- the notification that carries its message; digest_items, that message's
-- items).
ALTER TABLE notifications
    ADD COLUMN deferred_by         text CHECK (deferred_by IN ('quiet-hours', 'throttle', 'digest', 'ordering')),
    ADD COLUMN ordering_key        text CHECK (length(ordering_key) BETWEEN 1 AND 128),
    ADD COLUMN ordering_pos        integer,
    ADD COLUMN max_hold_ms         bigint CHECK (max_hold_ms > 0),
    ADD COLUMN ordering_hold_until timestamptz,
    ADD COLUMN ordering_broken     boolean,
    ADD COLUMN digest_key          text CHECK (length(digest_key) BETWEEN 1 AND 128),
    ADD COLUMN digest_id           uuid,
    ADD COLUMN digest_items        jsonb;
CREATE INDEX notifications_ordering_idx ON notifications (tenant_id, ordering_key, created_at, ordering_pos, id)
    WHERE ordering_key IS NOT NULL;
CREATE INDEX notifications_digest_idx ON notifications (digest_id) WHERE digest_id IS NOT NULL;

-- The sends a throttle counted: one row per notification that took a slot
-- of its category for its recipient (a profile id, or the address), kept
-- for the throttle's window. A slot is taken under a transaction-scoped
-- advisory lock on the (tenant, category, recipient), so concurrent
-- attempts on any worker see each other's.
CREATE TABLE throttle_slots (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    category        text        NOT NULL,
    recipient_key   text        NOT NULL,
    notification_id uuid        NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, category, recipient_key, notification_id)
);
CREATE INDEX throttle_slots_window_idx ON throttle_slots (tenant_id, category, recipient_key, taken_at);
-- Retention and erasure find a notification's slots.
CREATE INDEX throttle_slots_notification_idx ON throttle_slots (notification_id);

-- A digest: the members gathered for one recipient, category and digest
-- key, from the first's arrival until closes_at (or max_items). A member
-- joins the key's open digest under a transaction-scoped advisory lock on
-- the key, so two never open at once; flushed_at closes it, when its
-- message is made.
CREATE TABLE digests (
    id            uuid        PRIMARY KEY,
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    category      text        NOT NULL,
    recipient_key text        NOT NULL,
    digest_key    text        NOT NULL,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    closes_at     timestamptz NOT NULL,
    max_items     integer     NOT NULL CHECK (max_items > 0),
    items         integer     NOT NULL DEFAULT 0,
    flushed_at    timestamptz
);
CREATE INDEX digests_open_idx ON digests (tenant_id, category, recipient_key, digest_key, closes_at)
    WHERE flushed_at IS NULL;
