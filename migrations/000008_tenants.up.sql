-- Tenants: every notification, batch, operation and idempotency key belongs
-- to one, taken from the API key of the request that made it. Rows made
-- before tenants existed belong to the default tenant, which also owns the
-- keys of API_KEYS.
CREATE TABLE tenants (
    id              uuid        PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    -- Acceptance quotas (notifications per second and per day); NULL is none.
    accept_per_sec  integer     CHECK (accept_per_sec > 0),
    accept_per_day  integer     CHECK (accept_per_day > 0),
    -- The tenant's share of a saturated channel (Temporal fairness weight).
    weight          real        NOT NULL DEFAULT 1 CHECK (weight > 0 AND weight <= 1000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

-- API keys are stored as the SHA-256 of the key; prefix is the key's first
-- characters, shown to recognise it and to revoke it.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix       text        NOT NULL UNIQUE,
    hash         bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
    name         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

ALTER TABLE notifications
    ADD COLUMN tenant_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id);
ALTER TABLE batches
    ADD COLUMN tenant_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id);
ALTER TABLE operations
    ADD COLUMN tenant_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id);
ALTER TABLE notification_retries
    ADD COLUMN tenant_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id);

-- Idempotency keys are unique per tenant: one tenant's key never meets
-- another's (nor tells that it exists).
DROP INDEX notifications_idempotency_key_idx;
CREATE UNIQUE INDEX notifications_idempotency_key_idx
    ON notifications (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX batches_idempotency_key_idx;
CREATE UNIQUE INDEX batches_idempotency_key_idx
    ON batches (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX operations_idempotency_key_idx;
CREATE UNIQUE INDEX operations_idempotency_key_idx
    ON operations (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE notification_retries DROP CONSTRAINT notification_retries_pkey;
ALTER TABLE notification_retries ADD PRIMARY KEY (tenant_id, idempotency_key);

-- A tenant's list, newest first, reads its own rows only.
CREATE INDEX notifications_tenant_created_idx ON notifications (tenant_id, created_at DESC, id DESC);
CREATE INDEX operations_tenant_created_idx ON operations (tenant_id, created_at DESC, id DESC);
