ALTER TABLE notifications
    DROP COLUMN IF EXISTS html,
    DROP COLUMN IF EXISTS locale,
    DROP COLUMN IF EXISTS template_version,
    DROP COLUMN IF EXISTS template;
DROP TABLE IF EXISTS template_versions;
DROP TABLE IF EXISTS templates;
