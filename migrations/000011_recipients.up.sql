-- Recipients I: the person behind an address. A tenant's recipient
-- profiles (its own user ids) with their addresses and preferences, its
-- notification categories, the addresses it must never send to again
-- (suppressions) and the opt-outs recorded for an address no profile holds.
-- Every row belongs to one tenant and goes with it.

-- A profile: the tenant's own id for a person, their timezone, locale and
-- preferences (category -> channel -> allowed; absent means allowed).
CREATE TABLE recipients (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          text        NOT NULL CHECK (id ~ '^[A-Za-z0-9._:@-]{1,128}$'),
    timezone    text,
    locale      text,
    preferences jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- A profile's addresses, one row each (sms and email one, push one per
-- token, in order), so the profile that holds an address is one index probe.
-- address is stored as the notifications table stores a recipient.
CREATE TABLE recipient_addresses (
    tenant_id    uuid    NOT NULL,
    recipient_id text    NOT NULL,
    channel      text    NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    position     integer NOT NULL CHECK (position >= 0),
    address      text    NOT NULL,
    PRIMARY KEY (tenant_id, recipient_id, channel, position),
    FOREIGN KEY (tenant_id, recipient_id) REFERENCES recipients (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX recipient_addresses_address_idx ON recipient_addresses (tenant_id, channel, address);

-- A tenant's categories: a critical one (security, billing) ignores
-- opt-outs, never suppressions. A category not here is non-critical.
CREATE TABLE categories (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (name ~ '^[A-Za-z0-9._:-]{1,64}$'),
    critical    boolean     NOT NULL DEFAULT false,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Addresses never sent to again on a channel, each with why, where from
-- (the notification whose provider said so) and when.
CREATE TABLE suppressions (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel         text        NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    address         text        NOT NULL,
    reason          text        NOT NULL CHECK (reason IN ('manual', 'refused', 'bounced', 'complained',
                                                           'unsubscribed', 'invalid', 'unregistered')),
    note            text,
    notification_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, address)
);
CREATE INDEX suppressions_tenant_created_idx ON suppressions (tenant_id, created_at DESC, channel, address);

-- Opt-outs of an address no profile held when they were made (a one-click
-- unsubscribe, a complaint): category -> the channel is refused.
CREATE TABLE opt_outs (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel    text        NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    address    text        NOT NULL,
    category   text        NOT NULL,
    source     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, address, category)
);

-- The keys unsubscribe tokens are signed with: made once, kept, so a token
-- stays valid across restarts and on every API instance.
CREATE TABLE signing_keys (
    purpose    text        PRIMARY KEY,
    key        bytea       NOT NULL CHECK (length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A notification may name a profile (recipient_id) and an ordered list of
-- channels to fall back along; channel is the one in hand. category picks
-- the preference it is subject to. SKIPPED ends one that was not sent
-- because the address or the person refused it (skip_reason).
ALTER TABLE notifications
    ADD COLUMN recipient_id text,
    ADD COLUMN channels     text[],
    ADD COLUMN category     text,
    ADD COLUMN skip_reason  text CHECK (skip_reason IN ('suppressed', 'opted-out', 'no-address'));
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING', 'SENT',
                      'DELIVERED', 'FAILED', 'CANCELLED', 'SKIPPED'));
CREATE INDEX notifications_recipient_id_idx ON notifications (tenant_id, recipient_id) WHERE recipient_id IS NOT NULL;

-- Each attempt names the channel it went on (a fallback changes it).
ALTER TABLE delivery_attempts ADD COLUMN channel text;
