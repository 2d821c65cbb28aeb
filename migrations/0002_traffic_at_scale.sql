-- Traffic at scale (issue 8): peers get a small integer id, samples are
-- clustered by time (a range read touches only its own pages, pruning
-- removes whole leading pages), and hourly sums answer long bucketed views
-- without reading every sample.

CREATE TABLE traffic_peers (
    id          INTEGER PRIMARY KEY,
    network_key TEXT    NOT NULL,
    peer_key    TEXT    NOT NULL,
    UNIQUE (network_key, peer_key)
);

-- Byte deltas per poll and peer; only samples with traffic are stored. Two
-- polls in the same second add up.
CREATE TABLE traffic_samples_by_time (
    time INTEGER NOT NULL,
    peer INTEGER NOT NULL,
    rx   INTEGER NOT NULL,
    tx   INTEGER NOT NULL,
    PRIMARY KEY (time, peer)
) WITHOUT ROWID;

-- The same deltas summed per hour: `hour` is the end of the hour a sample
-- falls in (its time rounded up to a multiple of 3600), as a sample's time is
-- the end of the interval it measured. Kept by peer: a bucketed query reads
-- each peer's few hours in order, with nothing to sort. `entry` is
-- 'hour:rx:tx' as text, written with the sums, so a day's answer is
-- concatenated rather than converted number by number.
CREATE TABLE traffic_hourly (
    peer  INTEGER NOT NULL,
    hour  INTEGER NOT NULL,
    rx    INTEGER NOT NULL,
    tx    INTEGER NOT NULL,
    entry TEXT    NOT NULL,
    PRIMARY KEY (peer, hour)
) WITHOUT ROWID;

INSERT INTO traffic_peers (network_key, peer_key)
    SELECT DISTINCT network_key, peer_key FROM traffic_samples;
INSERT INTO traffic_samples_by_time (time, peer, rx, tx)
    SELECT s.time, p.id, SUM(s.rx), SUM(s.tx)
    FROM traffic_samples s JOIN traffic_peers p ON p.network_key = s.network_key AND p.peer_key = s.peer_key
    GROUP BY s.time, p.id;
INSERT INTO traffic_hourly (peer, hour, rx, tx, entry)
    SELECT peer, h, rx, tx, h || ':' || rx || ':' || tx
    FROM (SELECT peer, (time + 3599) / 3600 * 3600 AS h, SUM(rx) AS rx, SUM(tx) AS tx FROM traffic_samples_by_time GROUP BY 1, 2);
DROP TABLE traffic_samples;
ALTER TABLE traffic_samples_by_time RENAME TO traffic_samples;
