-- The outbox is no longer signalled by a trigger: a NOTIFY inside the
-- inserting transaction takes Postgres's notify-queue lock until commit, so
-- every accepting transaction committed one at a time (~30% of the API's
-- throughput). The API now sends one coalesced NOTIFY after its commits
-- (outbox.Waker); the relay's polling still covers a lost wake-up.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
