-- The last events of GET /api/v1/events (issue 24), so a client resumes
-- with Last-Event-ID across a restart. Each event is written here before it
-- is sent; the oldest beyond --events-kept are deleted in the same
-- transaction as the newest are written. Event data never holds a secret
-- (public keys, ports, generations, error texts).
CREATE TABLE events (
    id   INTEGER PRIMARY KEY, -- the SSE id: increasing, never given twice
    at   INTEGER NOT NULL,    -- unix seconds when it was published
    name TEXT    NOT NULL,    -- the SSE event name
    data TEXT    NOT NULL     -- its JSON data
);

-- One row once events were written: every event with an id up to
-- gone_through that is not in `events` is gone; max_id is the highest id
-- ever written.
CREATE TABLE event_log (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    gone_through INTEGER NOT NULL,
    max_id       INTEGER NOT NULL
);
