"""Benchmark: every console page over the 1,000,000-event database of ``bench api`` (not a test).

    .venv/bin/python -m scripts.bench_console [--events 1000000] [--requests 200]
                                              [--concurrency 1,4] [--reuse]

Uses ``bench api``'s scratch database ``govrix_bench_api`` (loaded by scripts/gen_events.py when
absent, or kept with ``--reuse``), adds what the management pages show (a few budgets, scoring
keys, two policy versions, a day of inline scores, audit rows), starts the API as the stack does
(``python -m api``, one uvicorn process), logs in through ``/login`` like a browser, then per page
fetches it once (the "first" column: what an operator waits for after a restart) and
``--requests`` times from each concurrency level, each request with a randomly chosen agent /
session / event. Prints p50 / p95 per page. Target (issue 12): p95 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from scripts import pgembed
from scripts.apikey import create_key
from scripts.bench_api import DB_NAME, _existing, _free_port, running_api
from scripts.bench_writer import scratch_db
from scripts.gen_events import load

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
rules:
  - name: no-big-models-for-interns
    when:
      - {field: agent_name, op: regex, value: "^intern-"}
      - {field: model, op: in, value: [gpt-4o, o1]}
    action: block
    message: "interns may not use gpt-4o"
  - name: tag-pii
    when: [{field: pii_detected, op: eq, value: true}]
    action: tag
    tag: pii-restricted
"""


def _seed_management(url: str) -> dict[str, list[str]]:
    """Budgets, keys, policy versions, scores and audit rows: what the other pages read."""
    with psycopg.connect(url, autocommit=True) as conn:
        agents = [r[0] for r in conn.execute("SELECT id FROM agents ORDER BY id LIMIT 50")]
        sessions = [
            r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY random() LIMIT 200")
        ]
        events = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM events WHERE \"timestamp\" > now() - interval '2 days' "
                "ORDER BY random() LIMIT 200"
            )
        ]
        conn.execute("DELETE FROM budgets WHERE agent_id = ANY(%s)", (agents[:10],))
        for a in agents[:10]:
            conn.execute(
                "INSERT INTO budgets (scope, agent_id, period, metric, limit_value) "
                "VALUES ('agent', %s, 'daily', 'usd', 25)",
                (a,),
            )
        if conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] < 5:  # type: ignore[index]
            for i in range(5):
                create_key(conn, f"bench-customer-{i}", "pro")
        if conn.execute("SELECT count(*) FROM policy_versions").fetchone()[0] == 0:  # type: ignore[index]
            for who in ("bench", "bench-2"):
                text = POLICY + f"# {who}\n"
                conn.execute(
                    "INSERT INTO policy_versions (who, source, checksum, rule_count, yaml) "
                    "VALUES (%s, 'api', %s, 2, %s)",
                    (who, hashlib.sha256(text.encode()).hexdigest(), text),
                )
        scored = conn.execute("SELECT count(*) FROM scores").fetchone()[0]  # type: ignore[index]
        if scored == 0:
            now = datetime.now(UTC)
            rows = []
            for i in range(5000):
                at = now - timedelta(seconds=random.randint(0, 86_400))
                rows.append((f"evt_bench_{i:06d}", random.choice(agents), at))
            with conn.cursor() as cur:
                cur.executemany(
                    'INSERT INTO actions (customer_id, event_id, agent_id, action, "timestamp", '
                    "event, received_at) VALUES ('proxy', %s, %s, 'tool_call', %s, "
                    '\'{"tool_name": "send_email"}\', %s) ON CONFLICT DO NOTHING',
                    [(e, a, at, at) for e, a, at in rows],
                )
                levels = ["none", "low", "medium", "high", "critical"]
                cur.executemany(
                    "INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, "
                    "reasoning, score_components, scoring_source, scorer_version, scored_at) "
                    "VALUES ('proxy', %s, %s, %s, 0.9, 'bench', "
                    '\'[{"source": "rule", "name": "bench.row", "value": 10, "detail": "seeded"}]\', \'rules\', \'bench\', %s) '
                    "ON CONFLICT DO NOTHING",
                    [
                        (e, sc, levels[min(4, sc // 21)], at)
                        for (e, _a, at), sc in zip(
                            rows, (random.randint(1, 100) for _ in rows), strict=True
                        )
                    ],
                )
        score_ids = [
            r[0]
            for r in conn.execute(
                "SELECT event_id FROM scores WHERE customer_id = 'proxy' ORDER BY random() LIMIT 100"
            )
        ]
    return {"agents": agents, "sessions": sessions, "events": events, "scores": score_ids}


def _cases(s: dict[str, list[str]]) -> list[tuple[str, Callable[[], str]]]:
    pick = random.choice
    return [
        ("/ (24h)", lambda: "/"),
        ("/?window=1h", lambda: "/?window=1h"),
        ("/?window=30d", lambda: "/?window=30d"),
        ("/agents", lambda: "/agents"),
        ("/agents/{id}", lambda: f"/agents/{pick(s['agents'])}"),
        ("/sessions", lambda: "/sessions"),
        ("/sessions?agent_id=", lambda: f"/sessions?agent_id={pick(s['agents'])}"),
        ("/sessions/{id}", lambda: f"/sessions/{pick(s['sessions'])}"),
        ("/explorer", lambda: "/explorer"),
        ("/explorer?agent_id=", lambda: f"/explorer?agent_id={pick(s['agents'])}"),
        ("/explorer/{id}", lambda: f"/explorer/{pick(s['events'])}"),
        ("/live", lambda: "/live"),
        ("/risk", lambda: "/risk"),
        ("/risk/{customer}/{id}", lambda: f"/risk/proxy/{pick(s['scores'])}"),
        ("/policies", lambda: "/policies"),
        ("/budgets", lambda: "/budgets"),
        ("/keys", lambda: "/keys"),
        ("/audit", lambda: "/audit"),
    ]


async def _timed(client: httpx.AsyncClient, path: str) -> float:
    t0 = time.perf_counter()
    r = await client.get(path)
    took = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return took


async def _level(
    client: httpx.AsyncClient, make: Callable[[], str], n: int, conc: int
) -> list[float]:
    """``n`` requests from ``conc`` concurrent clients: their latencies, sorted."""
    lat: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            lat.append(await _timed(client, make()))

    await asyncio.gather(*(worker() for _ in range(conc)))
    return sorted(lat)


async def _bench(
    base: str, key: str, cases: list[tuple[str, Callable[[], str]]], n: int, levels: list[int]
) -> list[tuple[str, float, list[tuple[float, float]]]]:
    out = []
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        r = await client.post("/login", data={"key": key, "next": "/"}, follow_redirects=False)
        if r.status_code not in (302, 303):
            raise RuntimeError(f"login: {r.status_code} {r.text[:200]}")
        for name, make in cases:
            first = await _timed(client, make())
            per_level = []
            for conc in levels:
                lat = await _level(client, make, n, conc)
                p50 = statistics.median(lat) * 1000
                p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000
                per_level.append((p50, p95))
            out.append((name, first * 1000, per_level))
            cols = ", ".join(
                f"c={c}: p50 {a:.0f} / p95 {b:.0f} ms"
                for c, (a, b) in zip(levels, per_level, strict=True)
            )
            print(f"  {name}: first {first * 1000:.0f} ms; {cols}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", default="1,4", help="comma-separated client counts")
    ap.add_argument("--reuse", action="store_true", help="keep an existing govrix_bench_api load")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    url = _existing(base) if args.reuse else None
    if url is None:
        print(f"loading {args.events:,} events into {DB_NAME} ...", flush=True)
        url = scratch_db(base, DB_NAME)
        t0 = time.perf_counter()
        load(url, args.events)
        print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    samples = _seed_management(url)
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    key = secrets.token_urlsafe(24)
    # no proxy in this bench: its health panel reads a port nobody listens on (answered at once)
    no_proxy = {"GOVRIX_PROXY_METRICS_URLS": f"http://127.0.0.1:{_free_port()}/metrics"}
    with running_api(url, key, no_proxy) as api:
        results = asyncio.run(_bench(api, key, _cases(samples), args.requests, levels))
    print()
    head = " | ".join(f"p50 / p95 ms, {c} client{'s' if c > 1 else ''}" for c in levels)
    print(f"| page ({total:,} events, 1 uvicorn process) | first ms | {head} |")
    print("|---|---:|" + "---:|" * len(levels))
    worst = 0.0
    for name, first, per in results:
        cells = " | ".join(f"{a:.0f} / {b:.0f}" for a, b in per)
        print(f"| `{name}` | {first:.0f} | {cells} |")
        worst = max(worst, *(b for _a, b in per))
    print(f"\nworst p95: {worst:.0f} ms (target <= 200 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
