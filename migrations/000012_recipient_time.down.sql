DROP TABLE IF EXISTS digests;
DROP TABLE IF EXISTS throttle_slots;
DROP INDEX IF EXISTS notifications_digest_idx;
DROP INDEX IF EXISTS notifications_ordering_idx;
ALTER TABLE notifications
    DROP COLUMN IF EXISTS digest_items,
    DROP COLUMN IF EXISTS digest_id,
    DROP COLUMN IF EXISTS digest_key,
    DROP COLUMN IF EXISTS ordering_broken,
    DROP COLUMN IF EXISTS ordering_hold_until,
    DROP COLUMN IF EXISTS max_hold_ms,
    DROP COLUMN IF EXISTS ordering_pos,
    DROP COLUMN IF EXISTS ordering_key,
    DROP COLUMN IF EXISTS deferred_by;
ALTER TABLE categories DROP COLUMN IF EXISTS digest, DROP COLUMN IF EXISTS throttle;
ALTER TABLE tenants DROP COLUMN IF EXISTS quiet_hours;
ALTER TABLE recipients DROP COLUMN IF EXISTS quiet_hours;
