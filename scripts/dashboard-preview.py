#!/usr/bin/env python3
"""Renders the Grafana dashboard's main series (packaging/grafana) from
/metrics snapshots of a real run, for the README: what an operator sees.

    scripts/dashboard-preview.py SCRAPE_DIR OUT.png

SCRAPE_DIR holds files named <unix-seconds>.txt, each one GET /metrics
(scripts/demo.sh writes them with DEMO_METRICS_MINUTES=N). Needs matplotlib.
"""
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LINE = re.compile(r'^(gateway_[a-z_]+)(\{([^}]*)\})? (\S+)$')


def parse(text):
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")))
            out[(m.group(1), labels)] = float(m.group(4))
    return out


def series(snaps, name, key=lambda labels: ""):
    """{legend: [(t, value)]} for every series of `name`."""
    out = {}
    for t, s in snaps:
        for (n, labels), v in s.items():
            if n == name:
                out.setdefault(key(dict(labels)), []).append((t, v))
    return out


def rate(points):
    return [(t1, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in zip(points, points[1:]) if t1 > t0 and v1 >= v0]


def plot(ax, title, lines, unit):
    for legend, pts in sorted(lines.items()):
        if pts:
            ax.plot([(t - T0) / 60 for t, _ in pts], [v for _, v in pts], label=legend or None)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    if any(lines):
        ax.legend(fontsize=7, loc="upper left")


def main(src, dst):
    global T0
    snaps = sorted((int(f[:-4]), parse(open(os.path.join(src, f)).read())) for f in os.listdir(src) if f.endswith(".txt"))
    T0 = snaps[0][0]
    now = {t: t for t, _ in snaps}
    fig, axes = plt.subplots(3, 2, figsize=(13, 9))
    net = lambda l: "network " + l.get("network", "")
    rx = {k + " received": rate(v) for k, v in series(snaps, "gateway_network_receive_bytes_total", net).items()}
    tx = {k + " sent": rate(v) for k, v in series(snaps, "gateway_network_transmit_bytes_total", net).items()}
    plot(axes[0][0], "Traffic per network (rate)", {**rx, **tx}, "bytes/s")
    age = {k: [(t, now[t] - v) for t, v in pts] for k, pts in series(snaps, "gateway_peer_latest_handshake_timestamp_seconds", lambda l: "peer " + l["peer"][:8] + "…").items()}
    plot(axes[0][1], "Handshake age per peer", age, "s")
    mean = {}
    for mode in ("apply", "drift"):
        s = series(snaps, "gateway_apply_duration_seconds_sum", lambda l: l.get("mode")).get(mode, [])
        c = series(snaps, "gateway_apply_duration_seconds_count", lambda l: l.get("mode")).get(mode, [])
        mean[mode] = [(t, (v1 - v0) / (n1 - n0)) for (t, v1), (_, v0), (_, n1), (_, n0) in zip(s[1:], s, c[1:], c) if n1 > n0]
    plot(axes[1][0], "Reconcile pass duration (mean per interval)", mean, "s")
    fails = series(snaps, "gateway_apply_failures_total", lambda l: "failures " + l.get("mode", ""))
    fails.update(series(snaps, "gateway_drift_repairs_total", lambda l: "drift repairs"))
    plot(axes[1][1], "Reconcile failures and drift repairs (total)", fails, "count")
    cmds = {k: rate(v) for k, v in series(snaps, "gateway_commands_total", lambda l: f'{l["program"]} {l["result"]}').items()}
    plot(axes[2][0], "Commands run, by program and result (rate)", cmds, "per s")
    polls = series(snaps, "gateway_poll_duration_seconds_sum", lambda l: "")
    count = series(snaps, "gateway_poll_duration_seconds_count", lambda l: "").get("", [])
    poll_mean = [(t, (v1 - v0) / (n1 - n0)) for (t, v1), (_, v0), (_, n1), (_, n0) in zip(polls.get("", [])[1:], polls.get("", []), count[1:], count) if n1 > n0]
    plot(axes[2][1], "Traffic poll duration (mean per interval)", {"poll": poll_mean}, "s")
    for ax in axes[2]:
        ax.set_xlabel("minutes", fontsize=8)
    fig.suptitle("gateway: the dashboard's series from a real run (scripts/demo.sh, DEMO_METRICS_MINUTES)", fontsize=11)
    fig.tight_layout()
    fig.savefig(dst, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
