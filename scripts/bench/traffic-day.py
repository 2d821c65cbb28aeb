#!/usr/bin/env python3
"""Fills a gateway database (already created by the daemon, so migrated)
with a synthetic day of traffic: PEERS peers in networks of 10, one sample
per peer per minute for 24 hours up to now, and their hourly sums.
Used by scripts/bench.sh; standard library only."""

import base64
import sqlite3
import sys
import time


def key(kind: int, n: int) -> str:
    raw = bytes([0x42, kind]) + n.to_bytes(4, "big") + bytes(26)
    return base64.b64encode(raw).decode()


def main() -> None:
    db, peers = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    now = int(time.time())
    end = now - now % 60
    start = end - 86400 + 60
    con = sqlite3.connect(db, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.executemany(
            "INSERT INTO traffic_peers (id, network_key, peer_key) VALUES (?, ?, ?)",
            ((10_000_000 + p, key(1, p // 10), key(2, p)) for p in range(peers)),
        )
        con.execute(
            """WITH RECURSIVE m(t) AS (SELECT ?1 UNION ALL SELECT t + 60 FROM m WHERE t < ?2)
               INSERT INTO traffic_samples (time, peer, rx, tx)
               SELECT t, p.id, 1000 + (p.id * 7 + t) % 5000, 500 FROM m, traffic_peers p
               WHERE p.id >= 10000000 ORDER BY t, p.id""",
            (start, end),
        )
        con.execute(
            """INSERT INTO traffic_hourly (hour, peer, rx, tx, entry)
               SELECT h, peer, rx, tx, h || ':' || rx || ':' || tx FROM (
                 SELECT (time + 3599) / 3600 * 3600 AS h, peer, SUM(rx) AS rx, SUM(tx) AS tx FROM traffic_samples
                 WHERE peer >= 10000000 GROUP BY h, peer)"""
        )
    rows = con.execute("SELECT COUNT(*) FROM traffic_samples").fetchone()[0]
    print(f"synthetic day: {peers} peers, {rows} samples from {start} to {end}")


if __name__ == "__main__":
    main()
