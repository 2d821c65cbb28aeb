-- Desired state: one row, replaced on every accepted POST/PATCH.
CREATE TABLE desired_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL,
    config      TEXT    NOT NULL,
    accepted_at INTEGER NOT NULL
);

-- Result of the last reconcile pass (one row).
CREATE TABLE apply_state (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    generation         INTEGER NOT NULL,
    applied_generation INTEGER NOT NULL,
    ok                 INTEGER NOT NULL,
    errors             TEXT    NOT NULL,
    finished_at        INTEGER NOT NULL,
    duration_ms        INTEGER NOT NULL,
    changed            TEXT    NOT NULL
);

-- Last raw WireGuard counters per peer, so a restart continues from them.
-- `epoch` identifies the interface instance (its ifindex): counters read
-- from a recreated interface start a new baseline even if they grew past
-- the old values before the poll.
CREATE TABLE peer_counters (
    network     TEXT    NOT NULL, -- the listen port: stays across a key rotation
    peer_key    TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    rx          INTEGER NOT NULL,
    tx          INTEGER NOT NULL,
    PRIMARY KEY (network, peer_key)
) WITHOUT ROWID;

-- Byte deltas per poll and peer; only samples with traffic are stored.
CREATE TABLE traffic_samples (
    time        INTEGER NOT NULL,
    network_key TEXT    NOT NULL,
    peer_key    TEXT    NOT NULL,
    rx          INTEGER NOT NULL,
    tx          INTEGER NOT NULL
);
CREATE INDEX traffic_samples_time ON traffic_samples (time);
