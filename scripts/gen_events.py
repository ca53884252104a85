"""Load N realistic, chained events fast (binary COPY), for the API benchmark and demos.

    .venv/bin/python -m scripts.gen_events [--events 1000000] [--days 6] [DATABASE_URL]

Events come from ``scripts.fakedata.make_events`` in chunks (every column populated, each
session a valid hash chain), spread evenly over the last ``--days`` days across 50 agents and
sessions of ``--session-size`` events. Rows go in with one binary COPY per chunk; afterwards the
``sessions`` and ``agents`` tables are filled from the events and the table is vacuumed and
analyzed, as it would be after a day of traffic. Without a URL: GOVRIX_DATABASE_URL, else the
embedded cluster's default database (``scripts/database.py``), migrated first either way.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg

from addon.event import COLUMNS, PG_TYPES
from scripts import database
from scripts.fakedata import make_events

_COPY = "COPY events ({}) FROM STDIN (FORMAT BINARY)".format(", ".join(f'"{c}"' for c in COLUMNS))

_FILL_SESSIONS = """
INSERT INTO sessions (id, agent_id, started_at, last_event_at, event_count, head_seq, head_hash)
SELECT DISTINCT ON (session_id) session_id, agent_id,
       min("timestamp") OVER w, max("timestamp") OVER w, count(*) OVER w, seq, lineage_hash
FROM events
WINDOW w AS (PARTITION BY session_id)
ORDER BY session_id, seq DESC
ON CONFLICT (id) DO NOTHING
"""
_FILL_AGENTS = """
INSERT INTO agents (id, name, source_ip, identity_kind, last_seen_at)
SELECT agent_id, 'agent-' || row_number() OVER (ORDER BY agent_id), '10.0.0.' || (row_number() OVER (ORDER BY agent_id) % 250),
       'name', max("timestamp")
FROM events GROUP BY agent_id
ON CONFLICT (id) DO NOTHING
"""


def load(
    url: str,
    n: int,
    *,
    days: float = 6.0,
    agents: int = 50,
    session_size: int = 50,
    chunk: int = 50_000,
    quiet: bool = False,
) -> None:
    """Append ``n`` events to the database at ``url`` (see the module docstring)."""
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=days)
    step = (end - start) / max(n, 1)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            "SELECT govrix_ensure_partitions(%s::date, %s::date)", (start.date(), end.date())
        )
        conn.commit()
        done = 0
        while done < n:
            size = min(chunk, n - done)
            evs = make_events(
                size,
                sessions=max(1, size // session_size),
                agents=agents,
                start=start + step * done,
                step=step,
                seed=done,
            )
            with conn.cursor() as cur, cur.copy(_COPY) as copy:
                copy.set_types(PG_TYPES)
                for ev in evs:
                    copy.write_row(msgspec.structs.astuple(ev))
            conn.commit()
            done += size
            if not quiet:
                rate = done / (time.perf_counter() - t0)
                print(f"  {done:>10,} events loaded ({rate:,.0f}/s)", flush=True)
        conn.execute(_FILL_SESSIONS)
        conn.execute(_FILL_AGENTS)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
        conn.execute("VACUUM ANALYZE sessions")
        conn.execute("VACUUM ANALYZE agents")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("url", nargs="?")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=6.0)
    ap.add_argument("--session-size", type=int, default=50)
    args = ap.parse_args(argv[1:])
    try:
        url = database.ready(args.url).url
    except database.DatabaseError as e:
        print(f"govrix: gen_events: {e}", file=sys.stderr)
        return 1
    load(url, args.events, days=args.days, session_size=args.session_size)
    print(f"loaded {args.events:,} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
