"""Benchmark: sustained events/s into the partitioned, indexed ``events`` table, and the writer
thread's own CPU microseconds per event.

    scripts/govrix bench writer [--events 200000] [--runs 3]

Uses a scratch database ``govrix_bench`` on the embedded cluster (or GOVRIX_DATABASE_URL's
server), recreated and migrated for each run. The producer enqueues as fast as it can but, unlike
the proxy, waits when the buffer is 80% full, so the number measured is the database path, not
the spool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from addon.writer import BatchWriter
from scripts import migrate, pgembed
from scripts.fakedata import make_events


def scratch_db(base_url: str, name: str = "govrix_bench") -> str:
    params = psycopg.conninfo.conninfo_to_dict(base_url)
    admin = psycopg.conninfo.make_conninfo(**{**params, "dbname": "postgres"})  # type: ignore[arg-type]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(**{**params, "dbname": name})  # type: ignore[arg-type]
    migrate.apply(url)
    return url


def run_once(url: str, events: list, capacity: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as spool_dir:
        w = BatchWriter(url, Path(spool_dir), capacity=capacity).start()
        high = int(capacity * 0.8)
        t_enqueue = 0.0
        t0 = time.perf_counter()
        for ev in events:
            while w.stats.depth() >= high:
                time.sleep(0.0005)
            a = time.perf_counter()
            w.enqueue(ev)
            t_enqueue += time.perf_counter() - a
        ok = w.flush(600)
        elapsed = time.perf_counter() - t0
        w.stop()
        assert ok and w.stats.written == len(events) and w.stats.spooled == 0, w.stats.snapshot()
        return {
            "events_per_s": len(events) / elapsed,
            "writer_cpu_us": w.stats.cpu_seconds / len(events) * 1e6,
            "enqueue_us": t_enqueue / len(events) * 1e6,
            "batches": w.stats.batches,
        }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--capacity", type=int, default=10_000)
    args = ap.parse_args()
    base = os.environ.get("GOVRIX_DATABASE_URL")
    if not base:
        c = pgembed.start()
        base = c.url()
    print(f"generating {args.events} chained events ...", flush=True)
    events = make_events(args.events, sessions=500, agents=50)
    results = []
    for i in range(args.runs):
        url = scratch_db(base)
        r = run_once(url, events, args.capacity)
        results.append(r)
        print(
            f"run {i + 1}: {r['events_per_s']:,.0f} events/s, writer CPU {r['writer_cpu_us']:.2f} µs/event, "
            f"{int(r['batches'])} batches",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print()
    print(f"| metric (median of {args.runs} runs, {args.events} events each) | value | target |")
    print("|---|---|---|")
    print(
        f"| sustained events/s (partitioned + 3 indexes) | {med['events_per_s']:,.0f} | >= 30,000 |"
    )
    print(f"| writer thread CPU per event | {med['writer_cpu_us']:.2f} µs | <= 15 µs |")
    print(f"| producer enqueue per event | {med['enqueue_us']:.2f} µs | (hot path) |")


if __name__ == "__main__":
    main()
