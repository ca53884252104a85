"""Benchmark: latency of the API's read routes over 1,000,000 events (not a test).

    .venv/bin/python -m scripts.bench_api [--events 1000000] [--requests 2000] [--concurrency 8]
                                          [--reuse]

Loads ``--events`` events (scripts/gen_events.py) into a scratch database ``govrix_bench_api``
on the embedded cluster (or GOVRIX_DATABASE_URL's server); ``--reuse`` keeps an existing load.
Starts the API exactly as the stack does (``python -m api``, one uvicorn process), then fires
``--requests`` requests per case from ``--concurrency`` concurrent clients, each request with a
randomly chosen agent / session / deep cursor, and prints p50 / p99 per case. Target: p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from api.pagination import encode_cursor
from scripts import pgembed
from scripts.bench_writer import scratch_db
from scripts.gen_events import load

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "govrix_bench_api"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _existing(base: str) -> str | None:
    params = psycopg.conninfo.conninfo_to_dict(base)
    url = psycopg.conninfo.make_conninfo(**{**params, "dbname": DB_NAME})  # type: ignore[arg-type]
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            return url if row and row[0] > 0 else None
    except psycopg.Error:
        return None


def _samples(url: str) -> dict[str, list[str]]:
    """Ids and deep cursors to draw requests from."""
    with psycopg.connect(url) as conn:
        agents = [r[0] for r in conn.execute("SELECT id FROM agents")]
        sessions = [
            r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY random() LIMIT 500")
        ]
        total = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        deep: list[str] = []
        for _ in range(50):  # cursors between 40% and 60% of the way down the newest-first list
            off = random.randint(int(total * 0.4), int(total * 0.6))
            ts, id_ = conn.execute(
                sql.SQL(
                    'SELECT "timestamp", id FROM events ORDER BY "timestamp" DESC, id DESC'
                    " OFFSET %s LIMIT 1"
                ),
                (off,),
            ).fetchone()  # type: ignore[misc]
            deep.append(encode_cursor(ts, id_))
        agent_deep: list[str] = []
        for a in agents[:20]:
            ts, id_ = conn.execute(
                'SELECT "timestamp", id FROM events WHERE agent_id = %s'
                ' ORDER BY "timestamp" DESC, id DESC OFFSET 10000 LIMIT 1',
                (a,),
            ).fetchone()  # type: ignore[misc]
            agent_deep.append(f"{a} {encode_cursor(ts, id_)}")
    return {"agents": agents, "sessions": sessions, "deep": deep, "agent_deep": agent_deep}


def _cases(s: dict[str, list[str]]) -> list[tuple[str, Callable[[], str]]]:
    def agent_deep() -> str:
        a, c = random.choice(s["agent_deep"]).split()
        return f"/api/v1/events?agent_id={a}&cursor={c}"

    return [
        ("events?agent_id= (page 1)", lambda: f"/api/v1/events?agent_id={random.choice(s['agents'])}"),
        ("events?session_id= (page 1)", lambda: f"/api/v1/events?session_id={random.choice(s['sessions'])}"),
        ("events (page 1, unfiltered)", lambda: "/api/v1/events"),
        ("events (deep page, cursor ~500k down)", lambda: f"/api/v1/events?cursor={random.choice(s['deep'])}"),
        ("events?agent_id= (deep page, cursor 10k down)", agent_deep),
        ("events?agent_id= (offset 5000)", lambda: f"/api/v1/events?agent_id={random.choice(s['agents'])}&offset=5000"),
        ("events/sessions/{id} (whole session)", lambda: f"/api/v1/events/sessions/{random.choice(s['sessions'])}"),
        ("agents/{id}/events (page 1)", lambda: f"/api/v1/agents/{random.choice(s['agents'])}/events"),
        ("sessions/{id}/verify", lambda: f"/api/v1/sessions/{random.choice(s['sessions'])}/verify"),
    ]  # fmt: skip


async def _run_case(
    client: httpx.AsyncClient, make: Callable[[], str], n: int, concurrency: int
) -> list[float]:
    lat: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            path = make()
            t0 = time.perf_counter()
            r = await client.get(path)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat


async def _bench(
    base: str, key: str, cases: list[tuple[str, Callable[[], str]]], n: int, conc: int
) -> list[tuple[str, float, float, float]]:
    out = []
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=30
    ) as client:
        for name, make in cases:
            await _run_case(client, make, max(50, n // 10), conc)  # warm-up
            t0 = time.perf_counter()
            lat = await _run_case(client, make, n, conc)
            rps = n / (time.perf_counter() - t0)
            lat.sort()
            p50 = statistics.median(lat) * 1000
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            out.append((name, p50, p99, rps))
            print(f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rps:,.0f} req/s", flush=True)
    return out


@contextlib.contextmanager
def running_api(url: str, key: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m api`` as the stack runs it (one uvicorn process) on a free port, once
    ``/ready``; yields its base URL and stops it afterwards."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "GOVRIX_DATABASE_URL": url, "GOVRIX_API_KEY": key, **(env or {})},
        cwd=ROOT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{api}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("API did not become ready")
            time.sleep(0.1)
        yield api
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--reuse", action="store_true", help="keep an existing govrix_bench_api load")
    args = ap.parse_args()
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    url = _existing(base) if args.reuse else None
    if url is None:
        print(f"loading {args.events:,} events into {DB_NAME} ...", flush=True)
        url = scratch_db(base, DB_NAME)
        t0 = time.perf_counter()
        load(url, args.events)
        print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    samples = _samples(url)
    key = secrets.token_urlsafe(24)
    with running_api(url, key) as api:
        results = asyncio.run(_bench(api, key, _cases(samples), args.requests, args.concurrency))
    print()
    print(
        f"| GET (1 uvicorn process, {args.events:,} events, concurrency {args.concurrency}, "
        f"{args.requests} requests) | p50 ms | p99 ms | req/s | target p99 |"
    )
    print("|---|---|---|---|---|")
    for name, p50, p99, rps in results:
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {rps:,.0f} | <= 20 ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
