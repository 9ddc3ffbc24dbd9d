-- Templates: a tenant's named message templates, in Liquid, per locale.
-- Each PUT adds a version; the notification keeps the one it was rendered
-- from (and what it rendered), so a later PUT never changes what was sent.
CREATE TABLE templates (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    current_version integer     NOT NULL CHECK (current_version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- locales: {"en":{"subject":"…","text":"…","html":"…"},"tr":{…}}.
CREATE TABLE template_versions (
    tenant_id      uuid        NOT NULL,
    name           text        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    channel        text        NOT NULL CHECK (channel IN ('sms', 'email', 'push')),
    locales        jsonb       NOT NULL,
    default_locale text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version),
    FOREIGN KEY (tenant_id, name) REFERENCES templates (tenant_id, name) ON DELETE CASCADE
);

-- The template a notification was rendered from, its version, the locale
-- it took, and the HTML part of an email; all NULL without a template.
ALTER TABLE notifications
    ADD COLUMN template         text,
    ADD COLUMN template_version integer,
    ADD COLUMN locale           text,
    ADD COLUMN html             text;
