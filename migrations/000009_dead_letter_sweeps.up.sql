-- A pass of the dead-letter sweep over a channel's DLQ, made in bounded
-- steps (internal/deadletter): each step visits messages at the head of the
-- queue and writes here how many of those the pass began with are still to
-- visit, so a pass cut short (an error, a shutdown, a crash, a request that
-- ran out of time) is resumed where it stopped, by any worker or API.
CREATE TABLE dead_letter_sweeps (
    channel      text        PRIMARY KEY,
    -- messages at the head of the queue the pass has still to visit
    remaining    bigint      NOT NULL,
    -- whether the pass also removes the poison messages (a purge)
    purge        boolean     NOT NULL DEFAULT false,
    -- what the pass removed so far: poison messages, retired messages
    purged       bigint      NOT NULL DEFAULT 0,
    retired      bigint      NOT NULL DEFAULT 0,
    -- the dead_letter_retirements rows (by key) the pass retires and
    -- deletes when it ends
    retire_ids   uuid[]      NOT NULL DEFAULT '{}',
    retire_below integer[]   NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
