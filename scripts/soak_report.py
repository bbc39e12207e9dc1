#!/usr/bin/env python3
"""Summarise a soak run (scripts/soak.sh) and plot it.

usage: soak_report.py OUT TERM_AT BURST_AT GROWTH_MAX

Reads OUT/samples.csv, events.csv, load.json and check.json; writes OUT/summary.md and
OUT/soak-rss.png (RSS, descriptors, dedup and limiter entries over time, with the restarts and
the burst marked). Memory is judged over the last third of the run: the gateway started for the
last time at TERM_AT and the burst of new names (BURST_AT) has had time to leave the dedup
table (its entries live 247 s). Exits 1 when RSS at the end is more than GROWTH_MAX above RSS at
the start of that window.
"""
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main():
    out, term_at, burst_at, growth_max = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    with open(os.path.join(out, "samples.csv")) as f:
        rows = [{k: (num(v) if k != "pid" else v) for k, v in r.items()} for r in csv.DictReader(f)]
    with open(os.path.join(out, "events.csv")) as f:
        events = sorted((int(r["t_s"]), r["event"]) for r in csv.DictReader(f))
    load = json.load(open(os.path.join(out, "load.json")))
    chk = json.load(open(os.path.join(out, "check.json"))) if os.path.getsize(os.path.join(out, "check.json")) else {}

    end = next((t for t, e in events if e.startswith("load done")), rows[-1]["t_s"])
    warm = max(term_at, burst_at + 250, 2 * end // 3)
    if warm >= end - 30:
        warm = 2 * end // 3
    live = [r for r in rows if r["rss_kib"] is not None]
    window = [r for r in live if warm <= r["t_s"] <= end]
    if len(window) < 4:
        print("soak_report: too few samples in the window", file=sys.stderr)
        return 1

    def avg(rs, k):
        vs = [r[k] for r in rs if r[k] is not None]
        return sum(vs) / len(vs) if vs else float("nan")

    head, tail = window[:3], window[-3:]
    rss0, rss1 = avg(head, "rss_kib") / 1024, avg(tail, "rss_kib") / 1024
    growth = rss1 / rss0 - 1
    peak = max(r["rss_kib"] for r in window) / 1024
    segs = {}
    for r in live:
        segs.setdefault(r["pid"], []).append(r)

    def mx(k, rs=live):
        vs = [r[k] for r in rs if r[k] is not None]
        return int(max(vs)) if vs else 0

    lines = [
        "| | |",
        "|---|---|",
        f"| RSS at warm-up (t={int(head[0]['t_s'])} s, mean of 3 samples) | {rss0:.1f} MiB |",
        f"| RSS at the end (t={int(tail[-1]['t_s'])} s) | {rss1:.1f} MiB ({growth * 100:+.1f} %) |",
        f"| RSS peak after warm-up / over the run | {peak:.1f} / {mx('rss_kib') / 1024:.1f} MiB |",
        f"| descriptors at warm-up / end / max | {int(avg(head, 'fds'))} / {int(avg(tail, 'fds'))} / {mx('fds')} |",
        f"| dedup entries at warm-up / end / max | {int(avg(head, 'dedup_entries'))} / {int(avg(tail, 'dedup_entries'))} / {mx('dedup_entries')} |",
        f"| limiter entries at warm-up / end / max | {int(avg(head, 'limiter_entries'))} / {int(avg(tail, 'limiter_entries'))} / {mx('limiter_entries')} |",
        f"| outside the Go runtime (RSS - Go sys: SQLite's caches) at warm-up / end | {(avg(head, 'rss_kib') * 1024 - avg(head, 'go_sys_bytes')) / 2**20:.1f} / {(avg(tail, 'rss_kib') * 1024 - avg(tail, 'go_sys_bytes')) / 2**20:.1f} MiB |",
        f"| Go heap in use at warm-up / end / max | {avg(head, 'heap_inuse_bytes') / 2**20:.1f} / {avg(tail, 'heap_inuse_bytes') / 2**20:.1f} / {mx('heap_inuse_bytes') / 2**20:.1f} MiB |",
        f"| goroutines at warm-up / end / max | {int(avg(head, 'goroutines'))} / {int(avg(tail, 'goroutines'))} / {mx('goroutines')} |",
        f"| things known at the end | {int(avg(tail, 'things'))} |",
        f"| spool bytes max | {mx('spool_bytes')} |",
        f"| gateway processes (restarts + 1) | {len(segs)} |",
        f"| valid records sent / acknowledged (2.04) | {load['sent']} / {load['acknowledged']} |",
        f"| response codes | {', '.join(f'{k}: {v}' for k, v in sorted(load['codes'].items()))} |",
        f"| no response (gateway down) / RST / retransmissions / separate | {load['lost']} / {load['rst']} / {load['retransmissions']} / {load['separate']} |",
        f"| burst: new names sent / acknowledged | {load['burst_sent']} / {load['burst_acknowledged']} |",
        f"| hostile datagrams sent | {sum(load['hostile']['sent'].values())} ({len(load['hostile']['sent'])} kinds) |",
        f"| hostile answers | {', '.join(f'{k}: {v}' for k, v in sorted(load['hostile']['answers'].items()))} |",
        f"| acknowledged / applied / lost (registry) | {chk.get('acknowledged')} / {chk.get('applied')} / {chk.get('lost')} |",
        f"| stored twice (retransmissions across a restart) | {chk.get('duplicates')} |",
        f"| hostile datagram stored | {chk.get('hostile_stored')} |",
        f"| machine load average (1 min), mean / max | {avg(rows, 'load1'):.2f} / {max(r['load1'] or 0 for r in rows):.2f} |",
    ]
    ev = ", ".join(f"{e} at {t} s" for t, e in events if not e.startswith("ready"))
    text = "\n".join(lines) + f"\n\nEvents: {ev}.\n"
    open(os.path.join(out, "summary.md"), "w").write(text)
    print(text)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for i, (pid, rs) in enumerate(segs.items()):
        ax1.plot([r["t_s"] / 60 for r in rs], [r["rss_kib"] / 1024 for r in rs], color="tab:blue",
                 label="RSS" if i == 0 else None)
        hs = [r for r in rs if r.get("heap_inuse_bytes") is not None]
        ax1.plot([r["t_s"] / 60 for r in hs], [r["heap_inuse_bytes"] / 2**20 for r in hs], color="tab:orange",
                 linewidth=0.8, label="Go heap in use" if i == 0 else None)
    ax1.set_ylabel("gateway memory (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.axvspan(warm / 60, end / 60, color="tab:green", alpha=0.08, label="after warm-up")
    ax1.set_title(f"coapgw soak: {load['devices']} devices, {load['acknowledged']} records acknowledged, "
                  f"{chk.get('lost')} lost")
    ax2.plot([r["t_s"] / 60 for r in live], [r["dedup_entries"] for r in live], label="dedup entries")
    ax2.plot([r["t_s"] / 60 for r in live], [r["limiter_entries"] for r in live], label="limiter entries")
    ax2.plot([r["t_s"] / 60 for r in live], [r["fds"] for r in live], label="descriptors")
    ax2.set_yscale("symlog")
    ax2.set_xlabel("minutes")
    ax2.legend(loc="upper left")
    for t, e in events:
        if e.startswith(("kill", "SIGTERM", "burst")):
            for ax in (ax1, ax2):
                ax.axvline(t / 60, color="tab:red", linestyle="--", linewidth=0.8)
            ax1.annotate(e.split(" (")[0], (t / 60, 1), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", ha="right", fontsize=8)
    ax1.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "soak-rss.png"), dpi=90)

    if growth > growth_max:
        print(f"soak_report: RSS grew {growth * 100:.1f} % after warm-up (limit {growth_max * 100:.0f} %)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
