-- Each peer's last endpoint the daemon saw (issue 23): a WireGuard interface
-- built anew (after wireguard-go was killed, its namespace deleted, a
-- restart or a crash) gets them back and sends each peer a keepalive, so the
-- peer answers at once instead of at its next handshake timer. Written only
-- when an endpoint changes.
CREATE TABLE peer_endpoints (
    network  INTEGER NOT NULL, -- the listen port
    peer_key TEXT    NOT NULL,
    endpoint TEXT    NOT NULL, -- IP:PORT or [IPv6]:PORT
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (network, peer_key)
) WITHOUT ROWID;
