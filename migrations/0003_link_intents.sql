-- Links in the root namespace being created (issue 10): recorded before the
-- command runs, removed once the link carries the gateway's tag. A row left
-- by a crash tells the next pass what to undo (an untagged link, the
-- wireguard-go serving it) before it plans anything.
CREATE TABLE link_intents (
    name       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL, -- 'bridge', 'veth' or 'wireguard'
    network    INTEGER,          -- the listen port; NULL for the bridge
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
